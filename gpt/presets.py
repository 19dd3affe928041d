"""The runs tasks 07 and 09 start from, and the search that chose them (RESEARCH_LOG.md has its table).

The CPU presets train for a fixed number of steps, so that the same seed prints the same table on
any machine; the step counts were chosen so that a whole run takes under 10 minutes on a 2-core CPU.
"""

import argparse

import torch

from .config import GPTConfig, ModernGPTConfig
from .device import mps_available

TASK07 = {
    # The course's configuration, as it ran it on a GPU: constant learning rate, 5000 steps.
    "gpu": GPTConfig(batch_size=64, block_size=256, n_embd=384, n_head=6, n_layer=6, dropout=0.2,
                     learning_rate=3e-4, schedule="constant", max_iters=5000, eval_interval=500, eval_iters=200),
    # For a laptop: the search's best trial (batch 16, below), at 8000 steps instead of 9200 so that
    # a whole run stays under 10 minutes on the slowest sitting of a 2-core CPU.
    "cpu": GPTConfig(batch_size=16, block_size=64, n_embd=128, n_head=4, n_layer=4, dropout=0.0,
                     learning_rate=2e-3, schedule="cosine", warmup=0.05, min_lr=1e-4, weight_decay=0.01,
                     max_iters=8000, eval_interval=1000, eval_iters=40),
}

# Task 09: task 07's CPU preset with rotary positions, and windows twice as long for the same tokens per
# step (block 128, batch 8): RoPE has no position table to learn, so it gains from the longer context
# where learned positions did not. 7000 steps keep a run under 10 minutes. No change from gpt/modern.py
# has passed its A/B (RESEARCH_LOG.md, "Task 09").
TASK09 = ModernGPTConfig(**{**vars(TASK07["cpu"]), "block_size": 128, "batch_size": 8, "max_iters": 7000,
                            "checkpoint": "checkpoints/task09.pt"})

# The recorded search for task 07's CPU preset (RESEARCH_LOG.md, "Task 07: the search"): each trial is
# the cpu preset with these settings, seed 1337, a whole run at a fixed number of steps chosen to take
# about 8-11 minutes here. `python task07.py --search` runs them again and prints the same numbers.
B32 = {"batch_size": 32, "max_iters": 4600, "eval_interval": 500, "eval_iters": 20}
B16 = {"batch_size": 16, "max_iters": 9200, "eval_interval": 1000, "eval_iters": 20}
TASK07_SEARCH = [
    {**B32},
    {**B32, "learning_rate": 3e-3},
    {**B32, "weight_decay": 0.1},
    {**B32, "dropout": 0.1},
    {**B16},
    {**B16, "learning_rate": 3e-3, "min_lr": 1e-5},
    {**B16, "n_embd": 96, "n_layer": 6},
    {**B16, "n_head": 8},
    {**B16, "learning_rate": 1.5e-3},
    {"max_iters": 8000},  # the preset, at the step count that keeps a run under 10 minutes
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

