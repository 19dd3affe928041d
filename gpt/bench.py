"""Speed benchmarks, run side by side on the same machine.

    python -m gpt.bench task05              # whole default run: the lecture's straightforward code vs ours
    python -m gpt.bench all --repeats 3     # every task 01-06

Each run is a separate process timed from start to exit (import, data, training, evaluation, sample),
the two ways alternating so that both see the same machine; the medians are compared.
"""

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TASKS = ("task01", "task02", "task03", "task04", "task05", "task06")
FINAL = re.compile(r"^Epoch (\d+): avg train loss (\S+) \| avg val loss (\S+)", re.M)


def timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return elapsed, proc.stdout


def last_epoch(stdout: str) -> str:
    it, train, val = FINAL.findall(stdout)[-1]
    return f"epoch {it}: train {train} val {val}"


def bench_task(task: str, repeats: int) -> dict:
    ways = {
        "straightforward": [sys.executable, "-m", "gpt.baseline", task],
        "gpt/": [sys.executable, f"{task}.py"],
    }
    times = {name: [] for name in ways}
    final = {}
    for r in range(repeats):
        order = list(ways) if r % 2 == 0 else list(ways)[::-1]
        for name in order:
            t, out = timed(ways[name])
            times[name].append(t)
            final[name] = last_epoch(out)
            print(f"  {task} {name:>15}: {t:6.1f} s   ({final[name]})", flush=True)
    slow, fast = statistics.median(times["straightforward"]), statistics.median(times["gpt/"])
    print(f"{task}: straightforward {slow:.1f} s, gpt/ {fast:.1f} s (medians of {repeats}) -> {slow / fast:.2f}x faster",
          flush=True)
    return {"task": task, "slow": slow, "fast": fast, "ratio": slow / fast, **final}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=TASKS + ("all",), help="which task's default run to time")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each way; the median is compared")
    args = parser.parse_args(argv)
    results = [bench_task(t, args.repeats) for t in (TASKS if args.task == "all" else (args.task,))]
    if len(results) > 1:
        print("\n| task | straightforward (s) | gpt/ (s) | speed-up |\n|---|---|---|---|")
        for r in results:
            print(f"| {r['task']} | {r['slow']:.1f} | {r['fast']:.1f} | {r['ratio']:.2f}x |")


if __name__ == "__main__":
    main()
