"""Task 07: scale up, with dropout, a hyperparameter search, and checkpoints.

Task 06's GPT, made bigger: more channels, heads and layers, and a longer context. Two presets:
- `gpu` is the course's run: 10.8 M parameters, dropout 0.2 (which randomly zeroes activations during
  training so that the network can't rely on any one path and overfits less: Srivastava et al. 2014,
  https://jmlr.org/papers/v15/srivastava14a.html, placed as in Vaswani et al. 2017,
  https://arxiv.org/abs/1706.03762), a constant learning rate, 5000 steps: minutes on a GPU, about a
  day on a CPU.
- `cpu` is the best configuration a search found for a 2-core CPU (course/presets.py, RESEARCH_LOG.md):
  0.8 M parameters, no dropout, a learning rate that warms up and then follows a cosine down to
  min_lr (Loshchilov & Hutter 2016, https://arxiv.org/abs/1608.03983), 8000 steps.
Both train a fixed number of steps, so the same seed prints the same table. The run ends with an
evaluation of 200 batches per split after the last step: the number to report.

    python task07.py                     # the gpu preset if CUDA is available, else the cpu preset
    python task07.py --preset cpu        # minutes on a laptop CPU
    python task07.py --resume            # continue from checkpoints/task07.pt, exactly
    python task07.py --overwrite         # train again, replacing checkpoints/task07.pt
    python task07.py --learning-rate 1e-3 2e-3 --n-embd 96 128    # a grid: every combination
    python task07.py --search            # the search that chose the cpu preset, again
    python task07.py --tokenizer bpe --vocab-size 512 --checkpoint checkpoints/task07-bpe.pt  # subword tokens
"""

from course.config import GPTConfig, parse_config
from course.distributed import is_main_process
from course.exits import friendly_errors
from course.presets import TASK07, choose_preset
from course.run import LongRun
from course.search import SEARCHABLE, grid_asked, search
from gpt.data import load_dataset
from gpt.model import GPT
from gpt.train import make_optimizer


def build_model(cfg: GPTConfig, vocab_size: int) -> GPT:
    return GPT(vocab_size, cfg.block_size, cfg.n_embd, cfg.n_head, cfg.n_layer, cfg.dropout)


def train_gpt(cfg: GPTConfig, resume: bool = False, overwrite: bool = False, quiet: bool = False) -> dict:
    """One run, in the lesson's order: settings, data, model, optimizer, train, report. Under torchrun,
    one of several processes that train it together (course/distributed.py). quiet: print nothing."""
    with LongRun("task07", cfg, build_model, resume, overwrite, quiet=quiet) as run:
        data = load_dataset(cfg.data, cfg.tokenizer, cfg.vocab_size)
        model = build_model(cfg, data.tokenizer.vocab_size).to(run.device)
        optimizer = make_optimizer(model.parameters(), cfg.learning_rate, cfg.weight_decay)
        history = run.train(model, optimizer, data)
        return run.report(model, data, history)


def extra_flags(parser):
    parser.add_argument("--preset", choices=sorted(TASK07), help="starting configuration; flags override it")
    parser.add_argument("--resume", action="store_true", help="continue the run saved at --checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace the model already saved at --checkpoint")
    parser.add_argument("--search", action="store_true", help="run the recorded search's trials again (hours)")
    parser.add_argument("--csv", default="runs/task07_trials.csv", help="a grid's or the search's table (default: %(default)s)")


def main(argv=None):
    preset, why = choose_preset(argv, TASK07)
    cfg, args = parse_config(TASK07[preset], argv, description=__doc__, extra=extra_flags, multi=SEARCHABLE)
    if args.search or grid_asked(args):  # several values for a setting: a trial for each combination
        return search(cfg, args, preset, build_model, lambda trial: train_gpt(trial, quiet=True))
    with friendly_errors(checkpoint=cfg.checkpoint):
        if is_main_process():
            print(f"preset: {preset} ({why})")
        return train_gpt(cfg, args.resume, args.overwrite)


if __name__ == "__main__":
    raise SystemExit(0 if main() is not None else 1)
