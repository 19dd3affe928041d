"""Hyperparameter trials for the scaled-up GPT: a grid from the command line, or the recorded search.

Every trial is a whole run at a fixed number of steps, so it prints the same numbers on any machine
and on any day; its score is the final evaluation (200 batches per split, after the last step).
Trials run one after the other in this process, so that they never compete for the CPU.
"""

import csv
import dataclasses
import io
import itertools
import time

from gpt.errors import UserError

from .config import GPTConfig
from .files import atomic_write
from gpt.model import count_parameters

SEARCHABLE = ("batch_size", "block_size", "learning_rate", "min_lr", "warmup", "n_embd", "n_head", "n_layer", "dropout",
              "weight_decay", "max_iters")  # task 07's own lesson: what a trial may change, the flags that take several values
EVALUATION = ("eval_interval", "eval_iters")  # not part of the lesson, but they decide which batches the final evaluation draws
COLUMNS = ["trial", "seed", *SEARCHABLE, *EVALUATION, "parameters", "seconds", "train_loss", "val_loss", "full_val_loss"]


def command_line(command: str, point: dict, seed: int) -> str:
    """The command that runs this trial again."""
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in point.items())
    return f"{command} {flags} --seed {seed}".replace("  ", " ")


def run_trial(train_one, cfg: GPTConfig, point: dict, trial: int, log=print) -> dict:
    """train_one(cfg) -> the run's result (task 07's train_gpt, quiet); the row of the trial's table."""
    start = time.perf_counter()
    result = train_one(cfg)
    final = result["history"][-1]
    row = {"trial": trial, "seed": cfg.seed, **{k: getattr(cfg, k) for k in (*SEARCHABLE, *EVALUATION)},
           "parameters": count_parameters(result["model"]),
           "seconds": round(time.perf_counter() - start, 1), "train_loss": round(final["train"], 4),
           "val_loss": round(final["val"], 4), "full_val_loss": round(result["measures"]["loss"], 4)}
    log(f"trial {trial}: val {row['val_loss']:.4f} (whole split {row['full_val_loss']:.4f}) after "
        f"{row['max_iters']} steps, {row['seconds']:.0f}s: " + " ".join(f"{k}={v}" for k, v in point.items()))
    return row


def format_table(rows: list[dict]) -> str:
    head = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
    return head + "".join("| " + " | ".join(str(r[c]) for c in COLUMNS) + " |\n" for r in rows)


def write_csv(rows: list[dict], path) -> None:
    """Atomically, like every file the project writes."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    with atomic_write(path, "w", newline="") as f:
        f.write(buf.getvalue())


def trial_seconds(build_model, trials: list) -> list[float]:
    """About how long each trial will take here: a few of its training steps timed, on its model
    made untrained (course/timing.py), for its steps and evaluations."""
    import torch

    from gpt.data import load_dataset
    from gpt.train import make_optimizer

    from .device import choose_precision, resolve_device
    from .timing import expected_seconds, seconds_per_step

    first = trials[0]
    vocab_size = load_dataset(first.data, first.tokenizer, first.vocab_size).tokenizer.vocab_size
    seconds = []
    for cfg in trials:
        device = resolve_device(cfg.device)
        with torch.random.fork_rng(devices=[]):
            model = build_model(cfg, vocab_size).to(device)
        optimizer = make_optimizer(model.parameters(), cfg.learning_rate, cfg.weight_decay)
        step = seconds_per_step(model, optimizer, cfg.batch_size, cfg.block_size, vocab_size,
                                choose_precision(device, cfg.precision), budget=1.0)
        seconds.append(expected_seconds(step, cfg.max_iters, cfg.eval_interval, cfg.eval_iters, cfg.final_eval_iters))
    return seconds


def run_trials(train_one, trials: list, points: list[dict], out_csv, command: str, build_model=None,
               log=print) -> list[dict]:
    """Each trial's config (the base with its point's settings) in turn, through train_one; the CSV is
    rewritten after every trial, sorted by val loss; at the end the table, and the best trial's command.
    Given build_model, first how long each trial and all of them will take here."""
    from .timing import duration

    expected = trial_seconds(build_model, trials) if build_model is not None else [None] * len(trials)
    if build_model is not None:
        log(f"about {duration(sum(expected))} here for the {len(trials)} trials")
    rows = []
    for i, (cfg, point) in enumerate(zip(trials, points)):
        about = f" (about {duration(expected[i])})" if expected[i] is not None else ""
        log(f"trial {i} of {len(points)}{about}: {command_line(command, point, cfg.seed)}")
        rows.append(run_trial(train_one, cfg, point, i, log))
        write_csv(sorted(rows, key=lambda r: r["val_loss"]), out_csv)
    rows.sort(key=lambda r: r["val_loss"])
    best = rows[0]
    log("\n" + format_table(rows))
    log(f"wrote {out_csv}\nbest: {command_line(command, points[best['trial']], best['seed'])}")
    return rows


def grid_points(values: dict) -> list[dict]:
    """Every combination of the values given for each setting, in the order given."""
    names = list(values)
    return [dict(zip(names, combo)) for combo in itertools.product(*(values[n] for n in names))]


def grid_asked(args) -> dict:
    """The settings given several values on the command line, {setting: values}: a grid, if any."""
    return {k: getattr(args, k) for k in SEARCHABLE if len(getattr(args, k)) > 1}


def search(cfg, args, preset: str, build_model, train_one) -> list[dict]:
    """Task 07's grid (the settings given several values) or its recorded search (--search): each
    trial the preset cfg with its point's settings, checked before any trains, then run one after the
    other through train_one (task 07's run, quiet); the table of them, sorted, in args.csv."""
    from .distributed import launched_by_torchrun
    from .exits import friendly_errors
    from .files import check_writable
    from .presets import TASK07_SEARCH
    from .run import check_models

    with friendly_errors():
        if launched_by_torchrun():
            raise UserError("a grid or the search trains its trials one after the other in one process: run it "
                            "with python")
        points = TASK07_SEARCH if args.search else grid_points(grid_asked(args))
        trials = [dataclasses.replace(cfg, **p, checkpoint="", runs="", sample_tokens=0) for p in points]
        check_models(build_model, [(f"trial {i}", trial) for i, trial in enumerate(trials)])
        check_writable(args.csv, "--csv")
        print(f"{len(points)} trials from the {preset} preset, one after the other")
        return run_trials(train_one, trials, points, args.csv, f"python task07.py --preset {preset}", build_model)
