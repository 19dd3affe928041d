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

from .config import GPTConfig
from .files import atomic_write
from .run import train_and_report

KNOBS = ("batch_size", "block_size", "learning_rate", "min_lr", "warmup", "n_embd", "n_head", "n_layer", "dropout",
         "weight_decay", "max_iters")  # task 07's own lesson: what a trial may change
EVALUATION = ("eval_interval", "eval_iters")  # not part of the lesson, but they decide which batches the final evaluation draws
COLUMNS = ["trial", "seed", *KNOBS, *EVALUATION, "parameters", "seconds", "train_loss", "val_loss", "full_val_loss"]


def command_line(script: str, preset: str, point: dict, seed: int) -> str:
    """The command that runs this trial again."""
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in point.items())
    return f"python {script} --preset {preset} {flags} --seed {seed}".replace("  ", " ")


def run_trial(task: str, build_model, base: GPTConfig, point: dict, trial: int, log=print) -> dict:
    cfg = dataclasses.replace(base, **point, checkpoint="", runs="", sample_tokens=0)
    start = time.perf_counter()
    result = train_and_report(task, cfg, build_model, log=lambda *_: None, progress=False)
    final = result["history"][-1]
    row = {"trial": trial, "seed": cfg.seed, **{k: getattr(cfg, k) for k in (*KNOBS, *EVALUATION)},
           "parameters": sum(p.numel() for p in result["model"].parameters()),
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


def run_trials(task: str, build_model, base: GPTConfig, points: list[dict], out_csv, script: str, preset: str,
               log=print) -> list[dict]:
    """Each point (a dict of settings) in turn; the CSV is rewritten after every trial, sorted by val
    loss; at the end the table, and the best trial's command line."""
    rows = []
    for i, point in enumerate(points):
        log(f"trial {i} of {len(points)}: {command_line(script, preset, point, base.seed)}")
        rows.append(run_trial(task, build_model, base, point, i, log))
        write_csv(sorted(rows, key=lambda r: r["val_loss"]), out_csv)
    rows.sort(key=lambda r: r["val_loss"])
    best = rows[0]
    log("\n" + format_table(rows))
    log(f"wrote {out_csv}\nbest: {command_line(script, preset, points[best['trial']], best['seed'])}")
    return rows


def grid_points(values: dict) -> list[dict]:
    """Every combination of the values given for each setting, in the order given."""
    names = list(values)
    return [dict(zip(names, combo)) for combo in itertools.product(*(values[n] for n in names))]
