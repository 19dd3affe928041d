"""Task 07: scale up, with dropout, a hyperparameter search, and checkpoints.

Task 06's GPT, made bigger: more channels, heads and layers, a longer context, and dropout, which
randomly zeroes activations during training so that the network can't rely on any one path and
overfits less (Srivastava et al. 2014, https://jmlr.org/papers/v15/srivastava14a.html; used after
attention, after each sub-layer and on the embeddings as in Vaswani et al. 2017,
https://arxiv.org/abs/1706.03762). The learning rate warms up and then follows a cosine down to
min_lr (Loshchilov & Hutter 2016, https://arxiv.org/abs/1608.03983), laid over the time budget.

Two presets: `gpu` is the course's run (10.8 M parameters, minutes on a GPU, about a day on a CPU);
`cpu` is the best configuration a search found for 10 minutes on a 2-core CPU (RESEARCH_LOG.md).

    python task07.py                     # the gpu preset if CUDA is available, else the cpu preset
    python task07.py --preset cpu        # about 10 minutes on a laptop CPU
    python task07.py --resume            # continue from checkpoints/task07.pt
    python task07.py --search --search-budget 1800 --trial-budget 150
"""

import argparse
import dataclasses
import sys

import torch

from gpt.config import ScaleConfig, at_least, checked, parse_config, positive
from gpt.run import friendly_errors
from gpt.scale import print_sample, train_gpt
from gpt.search import search

PRESETS = {
    # The course's configuration, as it ran it: constant learning rate, 5000 steps.
    "gpu": ScaleConfig(batch_size=64, block_size=256, n_embd=384, n_head=6, n_layer=6, dropout=0.2,
                       learning_rate=3e-4, max_iters=5000, eval_interval=500, eval_iters=200),
    # The search's winner for 10 minutes on a 2-core CPU (RESEARCH_LOG.md, task 07): 0.8 M parameters,
    # 570 s of training, then the final evaluation and the sample.
    "cpu": ScaleConfig(batch_size=32, block_size=64, n_embd=128, n_head=4, n_layer=4, dropout=0.0,
                       learning_rate=2e-3, max_iters=10**9, eval_interval=500, eval_iters=20,
                       time_budget=570, schedule="cosine", warmup=0.05, min_lr=1e-4),
}


def choose_preset(argv) -> tuple[str, str]:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", choices=sorted(PRESETS))
    known, _ = pre.parse_known_args(argv)
    if known.preset:
        return known.preset, "asked for with --preset"
    if torch.cuda.is_available():
        return "gpu", "CUDA is available"
    return "cpu", "no CUDA GPU found; --preset gpu runs the course's full-size model (about a day on a CPU)"


def extra_flags(parser):
    parser.add_argument("--preset", choices=sorted(PRESETS), help="starting configuration; flags override it")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace the model already saved at --checkpoint")
    parser.add_argument("--search", action="store_true",
                        help="run the hyperparameter search instead of training (every trial uses --schedule cosine)")
    parser.add_argument("--search-budget", type=checked(float, positive), default=1800, help="search: total seconds (default: 1800)")
    parser.add_argument("--trial-budget", type=checked(float, positive), default=150, help="search: seconds per trial (default: 150)")
    parser.add_argument("--confirm-seeds", type=checked(int, at_least(0)), default=2,
                        help="search: rerun the two best with this many more seeds (default: 2)")
    parser.add_argument("--search-out", default="runs/task07_search.csv", help="search: CSV of all trials")


def main(argv=None):
    preset, why = choose_preset(argv)
    cfg, args = parse_config(PRESETS[preset], argv, description=__doc__, extra=extra_flags)
    with friendly_errors():
        if args.search:
            print(f"searching for {args.search_budget:.0f}s, {args.trial_budget:.0f}s per trial, from the {preset} preset")
            return search(dataclasses.replace(cfg, schedule="cosine"), args.search_budget, args.trial_budget,
                          args.search_out, confirm_seeds=args.confirm_seeds)
        print(f"preset: {preset} ({why})")
        result = train_gpt(cfg, resume=args.resume, overwrite=args.overwrite)
        result["sample"] = print_sample(result, cfg)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
