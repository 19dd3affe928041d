"""Task 07: scale up, with dropout, a hyperparameter search, and checkpoints.

Task 06's GPT, made bigger: more channels, heads and layers, a longer context, and dropout, which
randomly zeroes activations during training so that the network can't rely on any one path and
overfits less (Srivastava et al. 2014, https://jmlr.org/papers/v15/srivastava14a.html; placed as in
Vaswani et al. 2017, https://arxiv.org/abs/1706.03762). The learning rate warms up and then follows a
cosine down to min_lr (Loshchilov & Hutter 2016, https://arxiv.org/abs/1608.03983).

Two presets: `gpu` is the course's run (10.8 M parameters, minutes on a GPU, about a day on a CPU);
`cpu` is the best configuration a search found for 10 minutes on a 2-core CPU (gpt/presets.py,
RESEARCH_LOG.md). Both train a fixed number of steps, so the same seed prints the same table. The
run ends with an evaluation of 200 batches per split after the last step: the number to report.

    python task07.py                     # the gpu preset if CUDA is available, else the cpu preset
    python task07.py --preset cpu        # under 10 minutes on a laptop CPU
    python task07.py --resume            # continue from checkpoints/task07.pt, exactly
    python task07.py --learning-rate 1e-3 2e-3 --n-embd 96 128    # a grid: every combination
    python task07.py --search            # the search that chose the cpu preset, again
    python task07.py --tokenizer bpe --vocab-size 512              # subword tokens instead of characters
"""

import dataclasses
import sys

from gpt.config import GPTConfig, parse_config
from gpt.files import check_writable
from gpt.model import GPT
from gpt.presets import TASK07, TASK07_SEARCH, choose_preset
from gpt.run import check_models, friendly_errors, train_and_report
from gpt.search import KNOBS, grid_points, run_trials


def build_model(cfg: GPTConfig, vocab_size: int) -> GPT:
    return GPT(vocab_size, cfg.block_size, cfg.n_embd, cfg.n_head, cfg.n_layer, cfg.dropout)


def extra_flags(parser):
    parser.add_argument("--preset", choices=sorted(TASK07), help="starting configuration; flags override it")
    parser.add_argument("--resume", action="store_true", help="continue the run saved at --checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace the model already saved at --checkpoint")
    parser.add_argument("--search", action="store_true", help="run the recorded search's trials again (hours)")
    parser.add_argument("--csv", default="runs/task07_trials.csv", help="a grid's or the search's table (default: %(default)s)")


def main(argv=None):
    preset, why = choose_preset(argv, TASK07)
    cfg, args = parse_config(TASK07[preset], argv, description=__doc__, extra=extra_flags, multi=KNOBS)
    grid = {k: getattr(args, k) for k in KNOBS if len(getattr(args, k)) > 1}
    with friendly_errors(checkpoint="" if args.search or grid else cfg.checkpoint):
        if args.search or grid:
            points = TASK07_SEARCH if args.search else grid_points(grid)
            check_models(build_model, [(f"trial {i}", dataclasses.replace(cfg, **p)) for i, p in enumerate(points)])
            check_writable(args.csv, "--csv")
            print(f"{len(points)} trials from the {preset} preset, one after the other")
            return run_trials("task07", build_model, cfg, points, args.csv, "task07.py", preset)
        print(f"preset: {preset} ({why})")
        return train_and_report("task07", cfg, build_model, resume=args.resume, overwrite=args.overwrite)


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
