"""Speed benchmarks, run side by side on the same machine.

    python -m course.bench task05                      # a whole default run: the lecture's straightforward code vs ours
    python -m course.bench all --repeats 3             # every task 01-06
    python -m course.bench task05 --against ../old     # ours against another checkout of this repository
    python -m course.bench generate                    # task 08: characters per second, with and without the cache
    python -m course.bench generate --course-size      # the same for the course's 10.8 M-parameter, block-256 model
    python -m course.bench gpu                         # task 07's gpu preset, its native precision against fp32 (CUDA)

What the models' predictions are worth (the stream's window, the loss by position) is measured by
`python -m course.measures`, not here: this package times things.

Each task run is a separate process timed from start to exit (import, data, training, evaluation,
sample), the two ways alternating so that both see the same machine; the medians are compared.
Nothing else should run beside a benchmark: on 2 cores, any other process changes its times.
"""

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .reference import LECTURE_SIZED

ROOT = Path(__file__).resolve().parent.parent
TASKS = LECTURE_SIZED[1:]  # tasks 01-06: task 00 has no lecture code to compare with
EPOCH = re.compile(r"^Epoch (\d+): avg train loss (\S+) \| avg val loss (\S+)", re.M)


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return elapsed, proc.stdout


def bench_task(task: str, repeats: int, against: Path | None = None, flags: tuple = ()) -> dict:
    """Whole runs of task, ours and the other way alternating; returns the medians and the tables."""
    other = ("straightforward", [sys.executable, "-m", "course.baseline", task], ROOT) if against is None else \
        (f"{against.name}", [sys.executable, f"{task}.py"], against)
    ways = {other[0]: other[1:], "this tree": ([sys.executable, f"{task}.py", *flags], ROOT)}
    times = {name: [] for name in ways}
    tables = {}
    for r in range(repeats):
        for name in list(ways) if r % 2 == 0 else list(ways)[::-1]:
            t, out = timed(*ways[name])
            times[name].append(t)
            tables[name] = EPOCH.findall(out)
            it, train, val = tables[name][-1]
            print(f"  {task} {name:>15}: {t:6.1f} s   (epoch {it}: train {train} val {val})", flush=True)
    slow, fast = (statistics.median(times[n]) for n in ways)
    same = tables[other[0]] == tables["this tree"]
    print(f"{task}: {other[0]} {slow:.1f} s [{min(times[other[0]]):.1f}-{max(times[other[0]]):.1f}], this tree "
          f"{fast:.1f} s [{min(times['this tree']):.1f}-{max(times['this tree']):.1f}] (medians of {repeats}) -> "
          f"{slow / fast:.2f}x; loss tables {'identical' if same else 'DIFFER'}", flush=True)
    return {"task": task, "other": other[0], "slow": slow, "fast": fast, "ratio": slow / fast, "same": same}


def bench_generate(model, tokenizer, blocks: int, repeats: int, label: str) -> dict:
    """Stream blocks * block_size tokens with the key/value cache and by full recomputation, alternating."""
    import torch

    from gpt.generate import sampler, stream, stream_without_cache
    from gpt.model import count_parameters

    bs = model.block_size
    n = blocks * bs
    print(f"{label}: block_size {bs}, {count_parameters(model):,} parameters, "
          f"{torch.get_num_threads()} threads, {n} tokens per stream", flush=True)
    start = tokenizer.encode("\n")[:1] or [0]
    results = {}
    for r in range(repeats):
        for use_cache in (True, False) if r % 2 == 0 else (False, True):
            way = stream if use_cache else stream_without_cache
            tokens = way(model, start, sampler(generator=torch.Generator().manual_seed(r)))
            stamps = [time.perf_counter()]
            for _ in range(n):
                next(tokens)
                stamps.append(time.perf_counter())
            gaps = [b - a for a, b in zip(stamps, stamps[1:])]
            run = {"chars_per_s": n / (stamps[-1] - stamps[0]),
                   "first_block_ms": 1e3 * statistics.mean(gaps[:bs]), "last_block_ms": 1e3 * statistics.mean(gaps[-bs:])}
            results.setdefault(use_cache, []).append(run)
            print(f"  {'cache' if use_cache else 'recompute':>9}: {run['chars_per_s']:8.1f} tokens/s, "
                  f"first block {run['first_block_ms']:.2f} ms/token, last block {run['last_block_ms']:.2f} ms/token",
                  flush=True)
    med = {k: {m: statistics.median(r[m] for r in runs) for m in runs[0]} for k, runs in results.items()}
    c, f = med[True], med[False]
    print(f"cache: {c['chars_per_s']:.1f} tokens/s, recompute: {f['chars_per_s']:.1f} tokens/s (medians of {repeats}) "
          f"-> {c['chars_per_s'] / f['chars_per_s']:.2f}x faster; with the cache the last block costs "
          f"{c['last_block_ms'] / c['first_block_ms']:.2f}x the first block per token", flush=True)
    return med


def course_size_model():
    """The gpu preset's architecture (10.8 M parameters, block 256), untrained: timing needs no training."""
    import torch

    from gpt.model import GPT
    from .presets import TASK07
    from gpt.tokenizer import CharTokenizer

    cfg = TASK07["gpu"]
    torch.manual_seed(0)
    tokenizer = CharTokenizer("\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")  # Tiny Shakespeare's 65
    model = GPT(tokenizer.vocab_size, cfg.block_size, cfg.n_embd, cfg.n_head, cfg.n_layer, cfg.dropout).eval()
    return model, tokenizer


def bench_gpu(repeats: int) -> None:
    """Task 07's gpu preset in the precision the GPU runs natively against fp32, whole runs alternating
    (CUDA only): what mixed precision buys."""
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("python -m course.bench gpu needs a CUDA GPU")
    times = {"auto": [], "fp32": []}
    for r in range(repeats):
        for precision in ("auto", "fp32") if r % 2 == 0 else ("fp32", "auto"):
            cmd = [sys.executable, "task07.py", "--preset", "gpu", "--precision", precision, "--checkpoint", "",
                   "--runs", "", "--seed", str(1337 + r)]
            seconds, out = timed(cmd, ROOT)
            times[precision].append(seconds)
            print(f"--precision {precision}: {seconds:.1f} s, {EPOCH.findall(out)[-1]}", flush=True)
    auto, fp32 = (statistics.median(times[p]) for p in ("auto", "fp32"))
    print(f"medians of {repeats}: auto {auto:.1f} s, fp32 {fp32:.1f} s -> {fp32 / auto:.2f}x", flush=True)


def main(argv=None):
    from .device import DEVICES  # the one list of devices

    parser = argparse.ArgumentParser(prog="python -m course.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=TASKS + ("all", "generate", "gpu"),
                        help="a task's default run, generation speed, or the GPU's precision")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each way; the medians are compared (default: 3)")
    parser.add_argument("--against", type=Path, help="tasks: another checkout to compare with, instead of the straightforward code")
    parser.add_argument("--flags", default="", help="tasks: extra flags for this tree's runs, e.g. \"--runs ''\"")
    parser.add_argument("--checkpoint", default="checkpoints/task07.pt", help="generate: the model (default: %(default)s)")
    parser.add_argument("--course-size", action="store_true", help="generate: the course's model size, untrained")
    parser.add_argument("--blocks", type=int, default=6, help="generate: stream length in block_size units (default: 6)")
    parser.add_argument("--device", default="auto", choices=DEVICES,
                        help="generate: where the model runs (default: auto)")
    args = parser.parse_args(argv)
    if args.what == "gpu":
        return bench_gpu(args.repeats)
    if args.what == "generate":
        from .checkpoint import load_checkpoint, model_from_checkpoint
        from .exits import friendly_errors

        from .device import describe_device, resolve_device

        with friendly_errors():  # a missing or foreign checkpoint: a message, not a traceback
            device = resolve_device(args.device)
            print(f"device: {describe_device(device)}", flush=True)
            if args.course_size and args.what == "generate":
                model, tokenizer = course_size_model()
                model = model.to(device)
            else:
                model, tokenizer = model_from_checkpoint(load_checkpoint(args.checkpoint), device)
            label = "the course's model size, untrained" if args.course_size else args.checkpoint
            return bench_generate(model, tokenizer, args.blocks, args.repeats, label)
    import shlex

    results = [bench_task(t, args.repeats, args.against, tuple(shlex.split(args.flags)))
               for t in (TASKS if args.what == "all" else (args.what,))]
    if len(results) > 1:
        print(f"\n| task | {results[0]['other']} (s) | this tree (s) | ratio | loss tables |\n|---|---|---|---|---|")
        for r in results:
            print(f"| {r['task']} | {r['slow']:.1f} | {r['fast']:.1f} | {r['ratio']:.2f}x | "
                  f"{'identical' if r['same'] else 'differ'} |")


if __name__ == "__main__":
    main()
