"""The runs tasks 07 and 09 start from, and the search that chose them (RESEARCH_LOG.md has its table).

The CPU presets train for a fixed number of steps, so that the same seed prints the same table on
any machine; their step counts were chosen from timed runs on a 2-core CPU, to take minutes
(RESEARCH_LOG.md has the times, and the search's table).
"""

import argparse

import torch

from .config import GPTConfig, ModernGPTConfig
from .device import mps_available

TASK07 = {
    # The course's configuration, as it ran it on a GPU: constant learning rate, 5000 steps.
    "gpu": GPTConfig(batch_size=64, block_size=256, n_embd=384, n_head=6, n_layer=6, dropout=0.2,
                     learning_rate=3e-4, schedule="constant", max_iters=5000, eval_interval=500, eval_iters=200),
    # For a laptop: the search's best trial (batch 16, below), at 8000 steps instead of 9200, to keep
    # a whole run short on a 2-core CPU.
    "cpu": GPTConfig(batch_size=16, block_size=64, n_embd=128, n_head=4, n_layer=4, dropout=0.0,
                     learning_rate=2e-3, schedule="cosine", warmup=0.05, min_lr=1e-4, weight_decay=0.01,
                     max_iters=8000, eval_interval=1000, eval_iters=40),
}

# Task 09: task 07's CPU preset with rotary positions, and windows twice as long for the same tokens per
# step (block 128, batch 8): RoPE has no position table to learn, so it can use the longer context.
# Why these settings, and what the other changes in gpt/modern.py did: RESEARCH_LOG.md, "2026-11-24:
# task 09 preset becomes block 128, batch 8, 7000 steps" and "2026-11-24: task 09 at its new preset,
# warmup-stable-decay and SwiGLU".
TASK09 = ModernGPTConfig(**{**vars(TASK07["cpu"]), "block_size": 128, "batch_size": 8, "max_iters": 7000,
                            "checkpoint": "checkpoints/task09.pt"})

# The recorded search for task 07's CPU preset (RESEARCH_LOG.md, "2026-11-23: task 07 search and
# preset at a fixed step count"): each trial is the cpu preset with these settings, seed 1337, a whole
# run at a fixed number of steps, the same tokens per trial at either batch size. `python task07.py --search` runs them again and prints the
# same numbers.
BATCH_32_TRIAL = {"batch_size": 32, "max_iters": 4600, "eval_interval": 500, "eval_iters": 20}
BATCH_16_TRIAL = {"batch_size": 16, "max_iters": 9200, "eval_interval": 1000, "eval_iters": 20}
TASK07_SEARCH = [
    {**BATCH_32_TRIAL},
    {**BATCH_32_TRIAL, "learning_rate": 3e-3},
    {**BATCH_32_TRIAL, "weight_decay": 0.1},
    {**BATCH_32_TRIAL, "dropout": 0.1},
    {**BATCH_16_TRIAL},
    {**BATCH_16_TRIAL, "learning_rate": 3e-3, "min_lr": 1e-5},
    {**BATCH_16_TRIAL, "n_embd": 96, "n_layer": 6},
    {**BATCH_16_TRIAL, "n_head": 8},
    {**BATCH_16_TRIAL, "learning_rate": 1.5e-3},
    {"max_iters": 8000},  # the preset, at its step count
    {"max_iters": 8000, "batch_size": 8, "block_size": 128},  # longer windows, the same tokens per step
]


def choose_preset(argv, presets: dict) -> tuple[str, str]:
    """The preset asked for with --preset, or gpu when CUDA is available, else cpu; and why."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", choices=sorted(presets))
    known, _ = pre.parse_known_args(argv)
    if known.preset:
        return known.preset, "asked for with --preset"
    if torch.cuda.is_available():
        return "gpu", "CUDA is available"
    gpu_preset = "--preset gpu runs the course's full-size model, made for a CUDA GPU (the run says how long it would take here)"
    if mps_available():
        return "cpu", f"an Apple GPU (MPS) but no CUDA GPU: the laptop preset, trained on MPS; {gpu_preset}"
    return "cpu", f"no GPU found; {gpu_preset}"

