"""Speed benchmarks, run side by side on the same machine.

    python -m gpt.bench task05              # whole default run: the lecture's straightforward code vs ours
    python -m gpt.bench all --repeats 3     # every task 01-06
    python -m gpt.bench generate            # task 08: characters per second, with and without the cache

Each task run is a separate process timed from start to exit (import, data, training, evaluation,
sample), the two ways alternating so that both see the same machine; the medians are compared.
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


def bench_generate(checkpoint: str, blocks: int, repeats: int) -> dict:
    """Stream blocks * block_size characters with the key/value cache and by full recomputation."""
    import torch

    from .checkpoint import load_checkpoint
    from .generate import stream
    from .scale import model_from_checkpoint

    model, tokenizer = model_from_checkpoint(load_checkpoint(checkpoint))
    bs = model.block_size
    n = blocks * bs
    print(f"{checkpoint}: block_size {bs}, {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{torch.get_num_threads()} threads, {n} characters per stream", flush=True)
    results = {}
    for r in range(repeats):
        for use_cache in (True, False) if r % 2 == 0 else (False, True):
            tokens = stream(model, [tokenizer.stoi.get("\n", 0)], generator=torch.Generator().manual_seed(r),
                            use_cache=use_cache)
            stamps = [time.perf_counter()]
            for _ in range(n):
                next(tokens)
                stamps.append(time.perf_counter())
            gaps = [b - a for a, b in zip(stamps, stamps[1:])]
            run = {"chars_per_s": n / (stamps[-1] - stamps[0]),
                   "first_block_ms": 1e3 * statistics.mean(gaps[:bs]), "last_block_ms": 1e3 * statistics.mean(gaps[-bs:])}
            results.setdefault(use_cache, []).append(run)
            print(f"  {'cache' if use_cache else 'recompute':>9}: {run['chars_per_s']:7.1f} chars/s, "
                  f"first block {run['first_block_ms']:.2f} ms/char, last block {run['last_block_ms']:.2f} ms/char", flush=True)
    med = {k: {m: statistics.median(r[m] for r in runs) for m in runs[0]} for k, runs in results.items()}
    c, f = med[True], med[False]
    print(f"cache: {c['chars_per_s']:.1f} chars/s, recompute: {f['chars_per_s']:.1f} chars/s (medians of {repeats}) -> "
          f"{c['chars_per_s'] / f['chars_per_s']:.2f}x faster; with the cache the last block costs "
          f"{c['last_block_ms'] / c['first_block_ms']:.2f}x the first block per character")
    return med


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=TASKS + ("all", "generate"), help="a task's default run to time, or generation")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each way; the median is compared")
    parser.add_argument("--checkpoint", default="checkpoints/task07.pt", help="generate: the model (default: %(default)s)")
    parser.add_argument("--blocks", type=int, default=6, help="generate: stream length in block_size units (default: 6)")
    args = parser.parse_args(argv)
    if args.what == "generate":
        from .run import friendly_errors
        with friendly_errors():
            return bench_generate(args.checkpoint, args.blocks, args.repeats)
    results = [bench_task(t, args.repeats) for t in (TASKS if args.what == "all" else (args.what,))]
    if len(results) > 1:
        print("\n| task | straightforward (s) | gpt/ (s) | speed-up |\n|---|---|---|---|")
        for r in results:
            print(f"| {r['task']} | {r['slow']:.1f} | {r['fast']:.1f} | {r['ratio']:.2f}x |")


if __name__ == "__main__":
    main()
