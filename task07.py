"""Task 07: scale up, with dropout, a hyperparameter search, and checkpoints.

Task 06's GPT, made bigger: more channels, heads and layers, and a longer context. Two presets:
- `gpu` is the course's run: 10.8 M parameters, dropout 0.2 (which randomly zeroes activations during
  training so that the network can't rely on any one path and overfits less: Srivastava et al. 2014,
  https://jmlr.org/papers/v15/srivastava14a.html, placed as in Vaswani et al. 2017,
  https://arxiv.org/abs/1706.03762), a constant learning rate, 5000 steps: minutes on a GPU, about a
  day on a CPU.
- `cpu` is the best configuration a search found for a 2-core CPU (gpt/presets.py, RESEARCH_LOG.md):
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

import dataclasses
import sys

from gpt.config import GPTConfig, parse_config
from gpt.checkpoint import resume
from gpt.data import load_dataset
from gpt.distributed import DataParallel, is_main_process, launched_by_torchrun
from gpt.files import check_writable
from gpt.model import GPT
from gpt.presets import TASK07, TASK07_SEARCH, choose_preset
from gpt.errors import UserError
from gpt.exits import friendly_errors
from gpt.run import (check_model, check_models, check_writable_outputs, long_run_files, long_run_hooks,
                     print_duration, print_flushed, print_nothing, print_start, report,
                     seed_and_pick_device)
from gpt.search import SEARCHABLE, grid_points, run_trials
from gpt.train import TrainingState, make_optimizer, train

import torch  # after gpt, which picks torch's CPU kernels before torch loads


def build_model(cfg: GPTConfig, vocab_size: int) -> GPT:
    return GPT(vocab_size, cfg.block_size, cfg.n_embd, cfg.n_head, cfg.n_layer, cfg.dropout)


def train_gpt(cfg: GPTConfig, resume_run: bool = False, overwrite: bool = False, log=print_flushed,
              progress=None) -> dict:
    """One run, in the lesson's order: settings checked, data, model, optimizer, train, report. Under
    torchrun, one of several processes that train it together (gpt/distributed.py)."""
    check_model(build_model, cfg)
    check_writable_outputs(cfg, cfg.checkpoint, resume_run, overwrite)
    device = seed_and_pick_device(cfg)
    with DataParallel(cfg, device) as processes:  # torchrun's processes, or this one alone
        log, progress = (log, progress) if processes.main else (print_nothing, False)  # process 0 speaks
        data = load_dataset(cfg.data, cfg.tokenizer, cfg.vocab_size)
        model = build_model(cfg, data.tokenizer.vocab_size).to(device)
        optimizer = make_optimizer(model.parameters(), cfg.learning_rate, cfg.weight_decay)
        state = TrainingState(cfg.seed)
        resumed = resume(cfg.checkpoint, model, optimizer, data.tokenizer, state) if resume_run else ""
        files = long_run_files("task07", cfg, log)
        print_start(cfg, model, log, processes.describe(cfg.batch_size, cfg.grad_accum))
        if resumed:
            log(resumed)
        print_duration(cfg, model, data.tokenizer.vocab_size, state, log)
        trained = processes.wrap(torch.compile(model) if cfg.compile else model)  # saved and measured: model
        hooks = long_run_hooks("task07", cfg, model, data.tokenizer, files, log, progress)
        history = train(trained, optimizer, data, cfg, hooks, state)
        if not processes.main:
            return {"history": history}
        return report("task07", cfg, model, data, history, files, cfg.checkpoint, log)


def extra_flags(parser):
    parser.add_argument("--preset", choices=sorted(TASK07), help="starting configuration; flags override it")
    parser.add_argument("--resume", action="store_true", help="continue the run saved at --checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace the model already saved at --checkpoint")
    parser.add_argument("--search", action="store_true", help="run the recorded search's trials again (hours)")
    parser.add_argument("--csv", default="runs/task07_trials.csv", help="a grid's or the search's table (default: %(default)s)")


def main(argv=None):
    preset, why = choose_preset(argv, TASK07)
    cfg, args = parse_config(TASK07[preset], argv, description=__doc__, extra=extra_flags, multi=SEARCHABLE)
    grid = {k: getattr(args, k) for k in SEARCHABLE if len(getattr(args, k)) > 1}
    if args.search or grid:
        with friendly_errors():
            if launched_by_torchrun():
                raise UserError("a grid or the search trains its trials one after the other in one process: run it "
                                "with python")
            points = TASK07_SEARCH if args.search else grid_points(grid)
            trials = [dataclasses.replace(cfg, **p, checkpoint="", runs="", sample_tokens=0) for p in points]
            check_models(build_model, [(f"trial {i}", trial) for i, trial in enumerate(trials)])
            check_writable(args.csv, "--csv")
            print(f"{len(points)} trials from the {preset} preset, one after the other")
            train_quietly = lambda trial: train_gpt(trial, log=lambda *_: None, progress=False)  # noqa: E731
            return run_trials(train_quietly, trials, points, args.csv, f"python task07.py --preset {preset}")
    with friendly_errors(checkpoint=cfg.checkpoint):
        if is_main_process():
            print(f"preset: {preset} ({why})")
        return train_gpt(cfg, args.resume, args.overwrite)


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
