"""Speed benchmarks, run side by side on the same machine.

    python -m bench task05                      # a whole default run: the lecture's straightforward code vs ours
    python -m bench all --repeats 3             # every task 01-06
    python -m bench task05 --against ../old     # ours against another checkout of this repository
    python -m bench generate                    # task 08: characters per second, with and without the cache
    python -m bench generate --course-size      # the same for the course's 10.8 M-parameter, block-256 model
    python -m bench window --checkpoint checkpoints/task09.pt   # what the stream's window costs in quality
    python -m bench positions --checkpoint checkpoints/task07.pt   # the val loss at each position of the window
    python -m bench gpu                         # task 07's gpu preset with and without the GPU speed-ups (CUDA)

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

ROOT = Path(__file__).resolve().parent.parent
TASKS = ("task01", "task02", "task03", "task04", "task05", "task06")
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
    other = ("straightforward", [sys.executable, "-m", "bench.baseline", task], ROOT) if against is None else \
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

    from gpt.generate import sampler, stream

    bs = model.block_size
    n = blocks * bs
    print(f"{label}: block_size {bs}, {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{torch.get_num_threads()} threads, {n} tokens per stream", flush=True)
    start = tokenizer.encode("\n")[:1] or [0]
    results = {}
    for r in range(repeats):
        for use_cache in (True, False) if r % 2 == 0 else (False, True):
            tokens = stream(model, start, sampler(generator=torch.Generator().manual_seed(r)), use_cache=use_cache)
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


def shakespeare_for(tokenizer, what: str):
    """Tiny Shakespeare, for a character-level model of it (the one tokenizer these benchmarks read)."""
    from gpt.data import load_dataset

    data = load_dataset()
    if data.tokenizer.to_dict() != tokenizer.to_dict():
        raise SystemExit(f"bench {what} reads Tiny Shakespeare's validation split: give a character-level model of it")
    return data


def bench_window(model, tokenizer, n_chars: int) -> dict:
    """Bits per character of the validation text when the stream reads it: each next character scored
    from the logits the stream computes, then the text's own character fed on. With the cache and by
    recomputing the last block_size characters: what the cache's way of handling a full window costs."""
    import itertools
    import math

    import torch.nn.functional as F

    from gpt.generate import stream

    data = shakespeare_for(tokenizer, "window")
    text = data.val[:n_chars].tolist()
    print(f"{len(text) - 1} characters of the validation split, block_size {model.block_size}", flush=True)
    results = {}
    for use_cache in (True, False):
        nll, feed = 0.0, iter(text[1:])

        def pick(logits):  # score the text's next character, then feed it on
            nonlocal nll
            token = next(feed)
            nll -= F.log_softmax(logits[0].float(), dim=-1)[token].item()
            return token

        start = time.perf_counter()
        for _ in itertools.islice(stream(model, text[:1], pick, use_cache=use_cache), len(text) - 1):
            pass
        results[use_cache] = nll / (len(text) - 1) / math.log(2)
        print(f"  {'cache' if use_cache else 'recompute':>9}: {results[use_cache]:.4f} bits/char "
              f"({time.perf_counter() - start:.1f} s)", flush=True)
    return results


def bench_positions(model, tokenizer) -> list[float]:
    """The validation loss by position in the window, in doubling ranges: how much the context helps,
    and what the loss averaged over a block_size window is made of."""
    from gpt.measures import measure_val

    device = next(model.parameters()).device.type
    m = measure_val(model, shakespeare_for(tokenizer, "positions"), model.block_size, device)
    by_position = m["loss_by_position"]
    print(f"val loss {m['loss']:.4f} over windows of {model.block_size}; by position (tokens of context):")
    start = 0
    while start < len(by_position):
        end = min(len(by_position), max(1, 2 * start))
        part = by_position[start:end]
        print(f"  {start:>4}-{end - 1:<4} {sum(part) / len(part):.4f}")
        start = end
    return by_position


def course_size_model():
    """The gpu preset's architecture (10.8 M parameters, block 256), untrained: timing needs no training."""
    import torch

    from gpt.model import GPT
    from gpt.presets import TASK07
    from gpt.tokenizer import CharTokenizer

    cfg = TASK07["gpu"]
    torch.manual_seed(0)
    tokenizer = CharTokenizer("\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")  # Tiny Shakespeare's 65
    model = GPT(tokenizer.vocab_size, cfg.block_size, cfg.n_embd, cfg.n_head, cfg.n_layer, cfg.dropout).eval()
    return model, tokenizer


def bench_gpu(repeats: int) -> None:
    """Task 07's gpu preset, with and without the GPU speed-ups, in this process (CUDA only)."""
    import dataclasses

    import torch

    from gpt.presets import TASK07
    from gpt.run import train_and_report
    from task07 import build_model

    if not torch.cuda.is_available():
        raise SystemExit("python -m bench gpu needs a CUDA GPU")
    for r in range(repeats):
        for speedups in (True, False) if r % 2 == 0 else (False, True):
            cfg = dataclasses.replace(TASK07["gpu"], checkpoint="", runs="", seed=1337 + r)
            start = time.perf_counter()
            result = train_and_report("task07", cfg, build_model, speedups=speedups, log=lambda *_: None)
            print(f"speed-ups {'on' if speedups else 'off'}: {time.perf_counter() - start:.1f} s, final val "
                  f"{result['history'][-1]['val']:.4f}", flush=True)


def main(argv=None):
    from gpt.device import DEVICES  # the one list of devices

    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=TASKS + ("all", "generate", "window", "positions", "gpu"),
                        help="a task's default run, generation speed, the stream's quality, the loss by "
                             "position, or the GPU")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each way; the medians are compared (default: 3)")
    parser.add_argument("--against", type=Path, help="tasks: another checkout to compare with, instead of the straightforward code")
    parser.add_argument("--flags", default="", help="tasks: extra flags for this tree's runs, e.g. \"--runs ''\"")
    parser.add_argument("--checkpoint", default="checkpoints/task07.pt", help="generate, window, positions: the model (default: %(default)s)")
    parser.add_argument("--course-size", action="store_true", help="generate: the course's model size, untrained")
    parser.add_argument("--blocks", type=int, default=6, help="generate: stream length in block_size units (default: 6)")
    parser.add_argument("--chars", type=int, default=5000, help="window: characters of the validation split (default: 5000)")
    parser.add_argument("--device", default="auto", choices=DEVICES,
                        help="generate, window, positions: where the model runs (default: auto)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import gpt  # noqa: F401  (picks torch's CPU kernels for this process and the runs it starts: gpt/cpu_kernels.py)
    if args.what == "gpu":
        return bench_gpu(args.repeats)
    if args.what in ("window", "positions", "generate"):
        from gpt.checkpoint import load_checkpoint, model_from_checkpoint
        from gpt.run import friendly_errors

        from gpt.device import describe_device, resolve_device

        with friendly_errors():  # a missing or foreign checkpoint: a message, not a traceback
            device = resolve_device(args.device)
            print(f"device: {describe_device(device)}", flush=True)
            if args.course_size and args.what == "generate":
                model, tokenizer = course_size_model()
                model = model.to(device)
            else:
                model, tokenizer = model_from_checkpoint(load_checkpoint(args.checkpoint), device)
            if args.what == "window":
                return bench_window(model, tokenizer, args.chars)
            if args.what == "positions":
                return bench_positions(model, tokenizer)
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
