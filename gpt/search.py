"""Hyperparameter trials for the scaled-up GPT: a grid from the command line, or the recorded search.

Every trial is a whole run at a fixed number of steps, so it prints the same numbers on any machine
and on any day; its score is the final evaluation (200 batches per split, after the last step).
Trials run one after the other in this process, so that they never compete for the CPU.
"""

import csv
import io
import itertools
import time

from .config import GPTConfig
from .files import atomic_write
from .model import count_parameters

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


def run_trials(train_one, trials: list, points: list[dict], out_csv, command: str, log=print) -> list[dict]:
    """Each trial's config (the base with its point's settings) in turn, through train_one; the CSV is
    rewritten after every trial, sorted by val loss; at the end the table, and the best trial's command."""
    rows = []
    for i, (cfg, point) in enumerate(zip(trials, points)):
        log(f"trial {i} of {len(points)}: {command_line(command, point, cfg.seed)}")
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
