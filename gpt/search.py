"""Random hyperparameter search for the scaled-up GPT under a wall-clock budget.

Every trial trains for the same number of seconds (not steps), with the learning rate schedule laid
over that budget, so a bigger model pays for its size with fewer steps: the question asked is
"what is the best model for this much time on this machine?". Trials run one after another in
this process, so they never compete for the CPU.
"""

import csv
import dataclasses
import io
import random
import statistics
import time

from .config import ScaleConfig
from .files import atomic_write

# Around what fits a 2-core CPU for minutes: 0.3 M to 2.7 M parameters.
SPACE = {
    "batch_size": [32, 64],
    "block_size": [64, 128],
    "learning_rate": [1e-3, 2e-3, 3e-3],
    "n_embd": [96, 128, 192],
    "n_head": [4, 6],
    "n_layer": [3, 4, 6],
    "dropout": [0.0, 0.1],
}
COLUMNS = ["trial", "seed", *SPACE, "parameters", "iters", "seconds", "train_loss", "val_loss"]


def sample_space(rng: random.Random, space: dict) -> dict:
    """One point of the space (n_head is redrawn until it divides n_embd)."""
    while True:
        point = {name: rng.choice(values) for name, values in space.items()}
        if point["n_embd"] % point["n_head"] == 0:
            return point


def run_trial(base: ScaleConfig, point: dict, trial_budget: float, seed: int, trial: int) -> dict:
    from .scale import train_gpt  # imported here: scale imports this module's neighbours

    cfg = dataclasses.replace(base, **point, seed=seed, time_budget=trial_budget, max_iters=10**9,
                              eval_interval=10**9, checkpoint="", sample_tokens=0)
    start = time.perf_counter()
    result = train_gpt(cfg, log=lambda *_: None, progress=False, eval_first=False)
    final = result["history"][-1]
    return {"trial": trial, "seed": seed, **point, "parameters": result["parameters"], "iters": final["iter"],
            "seconds": round(time.perf_counter() - start, 1), "train_loss": round(final["train"], 4),
            "val_loss": round(final["val"], 4)}


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


def search(base: ScaleConfig, total_budget: float, trial_budget: float, out_csv, space: dict = SPACE,
           confirm_seeds: int = 0, seed: int = 0, log=print) -> list[dict]:
    """Random trials until total_budget seconds are spent; then, if confirm_seeds, the two best
    configurations again with that many new seeds each. Returns the rows sorted by val loss."""
    rng = random.Random(seed)
    rows, start = [], time.perf_counter()
    while time.perf_counter() - start + trial_budget <= total_budget or not rows:
        point = sample_space(rng, space)
        row = run_trial(base, point, trial_budget, base.seed, len(rows))
        rows.append(row)
        log(f"trial {row['trial']}: val {row['val_loss']:.4f} after {row['iters']} steps  "
            + " ".join(f"{k}={point[k]}" for k in space))
        write_csv(sorted(rows, key=lambda r: r["val_loss"]), out_csv)
    rows.sort(key=lambda r: r["val_loss"])
    log("\n" + format_table(rows))
    if confirm_seeds and len(rows) >= 2:
        log(f"the two best configurations again, {confirm_seeds} more seed(s) each:")
        for rank, best in enumerate(rows[:2]):
            point = {k: best[k] for k in space}
            vals = [best["val_loss"]]
            for s in range(1, confirm_seeds + 1):
                extra = run_trial(base, point, trial_budget, base.seed + s, best["trial"])
                rows.append(extra)
                vals.append(extra["val_loss"])
            spread = statistics.stdev(vals) if len(vals) > 1 else 0.0
            log(f"  #{rank + 1} (trial {best['trial']}): val {statistics.mean(vals):.4f} ± {spread:.4f} over "
                f"{len(vals)} seeds: {', '.join(f'{v:.4f}' for v in vals)}")
        write_csv(sorted(rows, key=lambda r: r["val_loss"]), out_csv)
    log(f"wrote {out_csv}")
    return rows
