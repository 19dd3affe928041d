"""The whole course in one picture and one table, from the runs' own histories.

    python -m gpt.report --train                  # every task's default run, seeds 1337-1339 (tasks 00-06: minutes)
    python -m gpt.report --train --tasks task07 task09    # the long ones (10 minutes a run)
    python -m gpt.report                          # read the runs: draw assets/course.png, write
                                                  # assets/bands.json, print README's task table

--train runs each task's own command (`python taskNN.py --seed S`) in a fresh process, one after the
other, its files going to runs/seeds/S/taskNN/, and times it from start to exit. The report then
takes each task's final val loss over the seeds as its reference band (mean ± std): the band every
later run's loss curve shows, to tell whether a run is normal.
"""

import argparse
import ast
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .files import atomic_write
from .reference import BANDS, COURSE, COURSE_NOTES, ROOT

TASKS = ("task00", "task01", "task02", "task03", "task04", "task05", "task06", "task07", "task09")
SCRIPTS = {"task00": "task00_bigram.py", "task09": "task09_rope.py"}
LONG = ("task07", "task09")  # they save checkpoints; the report's runs must not replace the user's
SEEDS = (1337, 1338, 1339)
RUNS = ROOT / "runs" / "seeds"


def script(task: str) -> str:
    return SCRIPTS.get(task, f"{task}.py")


def command(task: str, seed: int) -> list[str]:
    cmd = [sys.executable, script(task), "--seed", str(seed), "--runs", str(RUNS / str(seed))]
    return cmd + (["--checkpoint", ""] if task in LONG else [])


def train(tasks, seeds) -> None:
    """Each task's default run for each seed, one process at a time, timed from start to exit."""
    for task in tasks:
        for seed in seeds:
            start = time.perf_counter()
            proc = subprocess.run(command(task, seed), cwd=ROOT, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                raise SystemExit(f"{' '.join(command(task, seed))} failed:\n{proc.stderr}")
            out = RUNS / str(seed) / task
            with atomic_write(out / "stdout.txt", "w") as f:
                f.write(proc.stdout)
            with atomic_write(out / "wall.json", "w") as f:
                json.dump({"wall_seconds": round(wall, 2), "command": f"python {script(task)} --seed {seed}"}, f)
            print(f"{task} seed {seed}: {wall:.1f} s, {last_epoch_line(proc.stdout)}", flush=True)


def last_epoch_line(stdout: str) -> str:
    return [line for line in stdout.splitlines() if line.startswith("Epoch ")][-1]


def read_history(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{"step": int(r["step"]), "train": float(r["train_loss"]), "val": float(r["val_loss"])}
                for r in csv.DictReader(f)]


def collect(tasks) -> dict:
    """{task: {seed: {'history', 'summary', 'wall'}}} for every run the report finds."""
    found = {}
    for task in tasks:
        for seed_dir in sorted(RUNS.glob("*")):
            run = seed_dir / task
            if (run / "summary.json").exists() and (run / "wall.json").exists():
                found.setdefault(task, {})[int(seed_dir.name)] = {
                    "history": read_history(run / "history.csv"),
                    "summary": json.loads((run / "summary.json").read_text()),
                    "wall": json.loads((run / "wall.json").read_text())["wall_seconds"],
                }
    return found


def make_bands(runs: dict) -> dict:
    bands = {}
    for task, by_seed in runs.items():
        finals = [r["history"][-1]["val"] for r in by_seed.values()]
        bands[task] = {
            "mean": round(statistics.mean(finals), 4),
            "std": round(statistics.stdev(finals), 4) if len(finals) > 1 else 0.0,
            "seeds": len(finals), "finals": {str(s): round(v, 4) for s, v in zip(by_seed, finals)},
            "epoch": next(iter(by_seed.values()))["history"][-1]["step"],
            "wall_mean": round(statistics.mean(r["wall"] for r in by_seed.values()), 1),
            "command": f"python -m gpt.report --train --tasks {task}  (python {script(task)} --seed S, "
                       f"S in {', '.join(map(str, by_seed))})",
        }
        epoch = COURSE.get(task, (None,))[0]  # ours at the epoch the course printed, to set the two side by side
        at = [h["val"] for r in by_seed.values() for h in r["history"] if h["step"] == epoch]
        if epoch is not None and len(at) == len(by_seed):  # task 07's preset evaluates at other steps
            bands[task]["at_course_epoch"] = {"mean": round(statistics.mean(at), 4),
                                             "std": round(statistics.stdev(at), 4) if len(at) > 1 else 0.0}
    return bands


def what_it_adds(task: str) -> str:
    """The first line of the task script's docstring, after 'Task NN: '."""
    doc = ast.get_docstring(ast.parse((ROOT / script(task)).read_text())) or ""
    return doc.splitlines()[0].split(": ", 1)[-1].rstrip(".")


def shorten(text: str, width: int) -> str:
    """text cut at the last word that fits in width characters, with an ellipsis if anything was cut."""
    return text if len(text) <= width else text[:width - 1].rsplit(" ", 1)[0].rstrip(",;") + "…"


def table(bands: dict, runs: dict) -> str:
    lines = ["| script | what it adds | course: val loss (epoch) | ours at the course's epoch | ours: final val (epoch) "
             "| parameters | wall time |", "|---|---|---|---|---|---|---|"]
    for task, b in bands.items():
        course = f"{COURSE[task][1]:.4f} ({COURSE[task][0]})" if task in COURSE else "-"
        if task in COURSE_NOTES:
            course += f", {COURSE_NOTES[task]}"
        at = b.get("at_course_epoch")
        ours_then = f"{at['mean']:.4f} ± {at['std']:.4f}" if at else "-"
        params = next(iter(runs[task].values()))["summary"]["parameters"]
        lines.append(f"| `{script(task)}` | {what_it_adds(task)} | {course} | {ours_then} | {b['mean']:.4f} ± {b['std']:.4f} "
                     f"({b['epoch']}) | {params:,} | {b['wall_mean']:.0f} s |")
    return "\n".join(lines)


def draw(runs: dict, bands: dict, path: Path) -> None:
    """Every task's val curve (the mean over its seeds), its band, and the course's number, on one figure."""
    from .plots import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(13, 6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (task, by_seed) in enumerate(runs.items()):
        color = colors[i % len(colors)]
        histories = list(by_seed.values())
        steps = [r["step"] for r in histories[0]["history"]]
        mean = [statistics.mean(h["history"][j]["val"] for h in histories) for j in range(len(steps))]
        label = f"{task}: {shorten(what_it_adds(task), 50)}"
        ax.plot(steps, mean, "-", color=color, lw=1.6, label=label)
        b = bands[task]
        ax.errorbar([steps[-1]], [b["mean"]], yerr=[b["std"]], fmt="o", color=color, ms=4, capsize=3)
        if task in COURSE:
            ax.plot([COURSE[task][0]], [COURSE[task][1]], "*", color=color, ms=13, mec="black", mew=0.6)
    ax.plot([], [], "*", color="white", mec="black", ms=13, label="the course's number (task 07's: on a GPU)")
    ax.plot([], [], "o", color="gray", ms=4, label="ours: final val, mean ± std over 3 seeds")
    ax.set_ylim(1.3, 3.0)
    ax.set_xlabel("step")
    ax.set_ylabel("val loss (nats per character)")
    ax.set_title("The course, one idea at a time: validation loss of each task's default run (mean over 3 seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes, over no curve
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", action="store_true", help="run the tasks first (each seed in its own process)")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=None,
                        help="with --train: which tasks (default: task00 to task06); the report reads every task it finds")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS), help="with --train (default: 1337 1338 1339)")
    parser.add_argument("--figure", default=str(ROOT / "assets" / "course.png"), help="where to draw (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.train:
        train(args.tasks or TASKS[:7], args.seeds)
    runs = collect(TASKS)
    if not runs:
        print(f"no runs under {RUNS}: run python -m gpt.report --train first", file=sys.stderr)
        return 2
    bands = make_bands(runs)
    with atomic_write(BANDS, "w") as f:
        json.dump(bands, f, indent=1)
    draw(runs, bands, Path(args.figure))
    print(table(bands, runs))
    print(f"\nwrote {BANDS} and {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
