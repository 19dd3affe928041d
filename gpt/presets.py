"""The runs tasks 07 and 09 start from, and the search that chose them (RESEARCH_LOG.md has its table).

The CPU presets train for a fixed number of steps, so that the same seed prints the same table on
any machine; the step counts were chosen so that a whole run takes under 10 minutes on a 2-core CPU.
"""

import argparse

import torch

from .config import GPTConfig, ModernGPTConfig

TASK07 = {
    # The course's configuration, as it ran it on a GPU: constant learning rate, 5000 steps.
    "gpu": GPTConfig(batch_size=64, block_size=256, n_embd=384, n_head=6, n_layer=6, dropout=0.2,
                     learning_rate=3e-4, schedule="constant", max_iters=5000, eval_interval=500, eval_iters=200),
    # For a laptop: the best configuration the search below found for 10 minutes of a 2-core CPU.
    "cpu": GPTConfig(batch_size=16, block_size=64, n_embd=128, n_head=4, n_layer=4, dropout=0.0,
                     learning_rate=2e-3, schedule="cosine", warmup=0.05, min_lr=1e-4, weight_decay=0.01,
                     max_iters=8000, eval_interval=1000, eval_iters=40),
}

# Task 09: task 07's CPU preset with rotary positions, and the changes whose A/B kept them.
TASK09 = ModernGPTConfig(**{**vars(TASK07["cpu"]), "checkpoint": "checkpoints/task09.pt"})

# The recorded search for task 07's CPU preset: every trial is the cpu preset with these changes,
# seed 1337. `python task07.py --search` runs them again.
TASK07_SEARCH = [
    {"max_iters": 4600},
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
    return "cpu", "no CUDA GPU found; --preset gpu runs the course's full-size model (about a day on a CPU)"
