"""The whole course in one picture and one table, from the runs' own histories.

    python -m course.report --train                  # every task's default run, seeds 1337-1339 (tasks 00-06: minutes)
    python -m course.report --train --tasks task07 task09    # the long ones (10 minutes a run)
    python -m course.report                          # read the runs: update assets/bands.json, draw the
                                                  # figure, print the task table

--train runs each task's own command (`python taskNN.py --seed S`; task 07 with --preset cpu, the
preset its band is of, on any hardware) in a fresh process, one after the other, its files going to
runs/seeds/S/taskNN/, and times it from start to exit. `--tasks` replaces the default list (tasks
00-06): `--tasks task07 task09` runs those two only. The report then takes each task's final val
loss over the seeds as its reference band (mean ± std): the band every later run's loss curve shows,
and the exercise grader checks against, to tell whether a run is normal.

Bands are kept per kind of hardware (course/reference.py), since the same seed prints a slightly
different table on other kernels, a GPU or another precision: a report on a GPU or a Mac writes that
hardware's bands beside the committed x86 CPU ones, and never replaces them. Nor is the committed
reference lost to a partial report: the bands measured replace only those tasks' bands of that
hardware, and only when measured over at least as many seeds as the band they replace (one seed
never stands in for three). The figure goes to assets/course.png (README's first figure) only when
every task was measured so on the reference hardware; otherwise to runs/seeds/course.png, unless
--figure names a place.
"""

import argparse
import ast
import json
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from .files import atomic_write
from .reference import (BANDS, COURSE, COURSE_NOTES, LECTURE_SIZED, REFERENCE_HARDWARE, ROOT, SAVES_CHECKPOINTS,
                        all_bands, script)
from .reference import TRAINED as TASKS
from .run_files import read_history

SEEDS = (1337, 1338, 1339)
RUNS = ROOT / "runs" / "seeds"
FIGURE = ROOT / "assets" / "course.png"


def command(task: str, seed: int) -> list[str]:
    cmd = [sys.executable, script(task), "--seed", str(seed), "--runs", str(RUNS / str(seed))]
    cmd += ["--preset", "cpu"] if task == "task07" else []  # the preset its band is of, on a GPU too
    return cmd + (["--checkpoint", ""] if task in SAVES_CHECKPOINTS else [])  # never replace the user's models


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
            "command": f"python -m course.report --train --tasks {task}  (python {script(task)} --seed S, "
                       f"S in {', '.join(map(str, by_seed))})",
        }
        epoch = COURSE.get(task, (None,))[0]  # ours at the epoch the course printed, to set the two side by side
        at = [h["val"] for r in by_seed.values() for h in r["history"] if h["step"] == epoch]
        if epoch is not None and len(at) == len(by_seed):  # task 07's preset evaluates at other steps
            bands[task]["at_course_epoch"] = {"mean": round(statistics.mean(at), 4),
                                             "std": round(statistics.stdev(at), 4) if len(at) > 1 else 0.0}
    return bands


def merge(reference: dict, measured: dict) -> tuple[dict, list[str]]:
    """The reference bands, with each measured band in place of its task's, unless it was measured over
    fewer seeds than the band it would replace; returns the bands and the tasks whose band was kept."""
    bands, kept = dict(reference), []
    for task, b in measured.items():
        if b["seeds"] < reference.get(task, {}).get("seeds", 0):
            kept.append(task)
        else:
            bands[task] = b
    order = {task: i for i, task in enumerate(TASKS)}
    return {task: bands[task] for task in sorted(bands, key=lambda t: order.get(t, len(order)))}, kept


def what_it_adds(task: str) -> str:
    """The first line of the task script's docstring, after 'Task NN: '."""
    doc = ast.get_docstring(ast.parse((ROOT / script(task)).read_text())) or ""
    return doc.splitlines()[0].split(": ", 1)[-1].rstrip(".")


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


def seeds_text(bands: dict) -> str:
    counts = sorted({b["seeds"] for b in bands.values()})
    return f"{counts[0]} seed{'s' if counts[0] > 1 else ''}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]} seeds"


def draw(runs: dict, bands: dict, path: Path):
    """Every task's val curve (the mean over its seeds), its band, and the course's number, on one figure
    sized for README's column (about 1000 px), the legend under the axes with each label whole.
    Returns the figure (closed)."""
    from .plots import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 7.4), layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (task, by_seed) in enumerate(runs.items()):
        color = colors[i % len(colors)]
        histories = list(by_seed.values())
        steps = [r["step"] for r in histories[0]["history"]]
        mean = [statistics.mean(h["history"][j]["val"] for h in histories) for j in range(len(steps))]
        label = "\n".join(textwrap.wrap(f"{task}: {what_it_adds(task)}", 50, break_on_hyphens=False))
        ax.plot(steps, mean, "-", color=color, lw=1.8, label=label)
        b = bands[task]
        ax.errorbar([steps[-1]], [b["mean"]], yerr=[b["std"]], fmt="o", color=color, ms=5, capsize=3)
        if task in COURSE:
            ax.plot([COURSE[task][0]], [COURSE[task][1]], "*", color=color, ms=14, mec="black", mew=0.6)
    ax.plot([], [], "*", color="white", mec="black", ms=14, label="the course's number (task 07's: on a GPU)")
    ax.plot([], [], "o", color="gray", ms=5, label=f"ours: final val, mean ± std over {seeds_text(bands)}")
    ax.set_ylim(1.3, 3.0)
    ax.set_xlabel("step", fontsize=11)
    ax.set_ylabel("val loss (nats per character)", fontsize=11)
    ax.set_title(f"The course, one idea at a time: validation loss of each task's default run\n"
                 f"(mean over {seeds_text(bands)})", fontsize=12)
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncol=2, fontsize=9.5, frameon=False)  # under the axes, over no curve
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return fig


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", action="store_true", help="run the tasks first (each seed in its own process)")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=None,
                        help="with --train: which tasks, instead of the default task00 to task06 (e.g. --tasks task07 "
                             "task09); the report reads every task it finds")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS), help="with --train (default: 1337 1338 1339)")
    parser.add_argument("--figure", default=None, help=f"where to draw (default: {FIGURE} when every task was "
                                                       f"measured, else {RUNS / 'course.png'})")
    args = parser.parse_args(argv)
    if args.train:
        train(args.tasks or LECTURE_SIZED, args.seeds)
    runs = collect(TASKS)
    if not runs:
        print(f"no runs under {RUNS}: run python -m course.report --train first", file=sys.stderr)
        return 2
    kinds = sorted({r["summary"].get("hardware", "") for by_seed in runs.values() for r in by_seed.values()})
    if kinds != [kinds[0]] or not kinds[0]:
        print(f"the runs under {RUNS} " + ("don't say which hardware they ran on (an older version wrote them)"
              if "" in kinds else f"come from several kinds of hardware ({'; '.join(kinds)})") +
              ": a band is of one kind. Measure them again here: python -m course.report --train", file=sys.stderr)
        return 2
    where = kinds[0]
    measured = make_bands(runs)
    everything = all_bands()
    reference = everything.get(where, {})
    bands, kept = merge(reference, measured)
    if bands != reference:
        with atomic_write(BANDS, "w") as f:
            json.dump({**everything, where: bands}, f, indent=1)
    # every task, over at least the reference's seeds, on the hardware of the committed figure
    whole = set(measured) - set(kept) == set(TASKS) and where == REFERENCE_HARDWARE
    figure = Path(args.figure) if args.figure else FIGURE if whole else RUNS / "course.png"
    draw(runs, measured, figure)
    print(table(measured, runs))
    print()
    replaced = [task for task in measured if task not in kept]
    others = len(bands) - len(replaced)
    print(f"{BANDS}, {where}: " + (f"the bands of {', '.join(replaced)} replaced by these; " if replaced else
                                   "unchanged; ") + f"{others} other task{'s' if others != 1 else ''}' bands as they were"
          + ("" if where == REFERENCE_HARDWARE else f"; the committed {REFERENCE_HARDWARE} bands as they were"))
    for task in kept:
        print(f"  {task}: measured over {measured[task]['seeds']} seed(s), the reference over {reference[task]['seeds']}: "
              f"kept the reference (measure at least as many seeds to replace it)")
    print(f"drew {figure}" + ("" if args.figure or whole else
                              f" ({FIGURE} is drawn when every task is measured on the {REFERENCE_HARDWARE} of the "
                              f"committed bands; --figure PATH draws anywhere)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
