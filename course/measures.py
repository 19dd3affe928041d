"""The measures of a saved model, printed (the math is gpt/measures.py's):

    python -m course.measures positions --checkpoint checkpoints/task09.pt   # the val loss by position
    python -m course.measures window --checkpoint checkpoints/task09.pt      # what task 08's stream costs
    python -m course.measures speed --checkpoint checkpoints/gru.pt          # task 08's characters per second

Several checkpoints are measured one after the other. `positions --figure` draws their smooth
curves side by side; compare_rnn.py's figure, again from the models it saved, from every window start:

    python -m course.measures positions --checkpoint checkpoints/gpt.pt checkpoints/gru.pt checkpoints/lstm.pt \\
        --every 1 --figure assets/compare_rnn_loss_by_position.png
"""

import argparse
import itertools
import time

import torch

from gpt.data import load_dataset
from gpt.errors import UserError
from gpt.generate import sampler, stream, stream_without_cache
from gpt.measures import loss_by_position_val, measure_val, stream_cost, window_starts


def format_measures(split: str, m: dict) -> str:
    """One line in a fixed format, e.g.
    val (111,540 characters): loss 2.0612 | perplexity 7.86 | 2.974 bits/char | top-1 40.1% | top-5 76.3%"""
    size = f"{m['chars']:,} characters" + (f", {m['tokens']:,} tokens" if m["tokens"] != m["chars"] else "")
    return (f"{split} ({size}): loss {m['loss']:.4f} | perplexity {m['perplexity']:.2f} | "
            f"{m['bits_per_char']:.3f} bits/char | top-1 {100 * m['top1']:.1f}% | top-5 {100 * m['top5']:.1f}%")


def shakespeare_for(tokenizer, what: str):
    """Tiny Shakespeare, for a character-level model of it (the one tokenizer these measures read)."""
    from .download import ensure_text

    ensure_text()
    data = load_dataset()
    if data.tokenizer.to_dict() != tokenizer.to_dict():
        raise UserError(f"{what} reads Tiny Shakespeare's validation split: give a character-level model of it")
    return data


def print_stream_cost(model, tokenizer, n_chars: int, log=print) -> dict:
    """Bits per character of the first n_chars of the validation text when task 08's stream reads it,
    with the cache and by recomputing the last block_size characters."""
    text = shakespeare_for(tokenizer, "window").val[:n_chars].tolist()
    log(f"{len(text) - 1} characters of the validation split, block_size {model.block_size}")
    results = {}
    for name, way in (("cache", stream), ("recompute", stream_without_cache)):
        results[name] = stream_cost(model, text, way)
        log(f"  {name:>9}: {results[name]:.4f} bits/char")
    return results


def stream_speed(model, n_chars: int = 5000, edge: int = 500, seed: int = 1337) -> dict:
    """Characters per second of task 08's stream (sampled at temperature 1, from token 0), over its
    first `edge` characters (the prefill included), its last `edge` of n_chars, and all of them:
    whether a character costs more as the stream goes on."""
    n_chars, edge = max(n_chars, 1), min(edge, max(n_chars, 1))
    pick = sampler(generator=torch.Generator().manual_seed(seed))
    start = time.perf_counter()
    times = [time.perf_counter() for _ in itertools.islice(stream(model, [0], pick), n_chars)]
    return {"chars": n_chars, "edge": edge, "first": edge / (times[edge - 1] - start),
            "last": edge / (times[-1] - (times[-edge - 1] if n_chars > edge else start)),
            "all": n_chars / (times[-1] - start)}


def format_speed(speed: dict) -> str:
    return (f"stream: {speed['all']:,.0f} characters/s over {speed['chars']:,} (first {speed['edge']}: "
            f"{speed['first']:,.0f}/s, last {speed['edge']}: {speed['last']:,.0f}/s)")


def print_loss_by_position(model, tokenizer, every: int = 4, log=print) -> list[float]:
    """The validation loss by position in the window, in doubling ranges: how much the context helps,
    and what the loss averaged over a block_size window is made of. Two columns: from consecutive
    windows (each position over its own 1/block_size of the split, as a run's measures and its
    summary.json hold it) and from every window start (each position over the same characters:
    smooth), or from a 1/every share of them (gpt/measures.py's loss_by_position). Returns the second,
    position by position."""
    data = shakespeare_for(tokenizer, "positions")
    bs = model.block_size
    m = measure_val(model, data, bs)
    windows = len(window_starts(len(data.val) + 1 - bs, bs, every))
    share = "every window start" if every == 1 else f"runs of {4 * bs} window starts, one in every {every}"
    log(f"val loss {m['loss']:.4f} over windows of {bs}; by position (tokens of context), from consecutive windows "
        f"and from {share} ({windows:,} windows):")
    smooth = loss_by_position_val(model, data, bs, every)
    log(f"  {'':9} {'consecutive':>11} {'every start' if every == 1 else 'runs':>11}")
    start = 0
    while start < bs:
        end = min(bs, max(1, 2 * start))
        mean = [sum(curve[start:end]) / (end - start) for curve in (m["loss_by_position"], smooth)]
        log(f"  {start:>4}-{end - 1:<4} {mean[0]:>11.4f} {mean[1]:>11.4f}")
        start = end
    return smooth


def model_label(model) -> str:
    """How a figure's legend names a model: 'GPT (task 07)', 'RotaryGPT (task 09)', 'GRU'."""
    from gpt.rnn import RNNLanguageModel

    if isinstance(model, RNNLanguageModel):
        return model.args["cell"].upper()
    name = type(model).__name__
    return {"GPT": "GPT (task 07)", "RotaryGPT": "RotaryGPT (task 09)"}.get(name, name)


def draw_positions(curves: dict, seeds: set, every: int, path) -> None:
    """Each checkpoint's smooth loss by position ({label: curve}), the first one's as the reference;
    seeds: those the checkpoints' runs were trained with (None where a checkpoint doesn't say)."""
    from .plots import plot_loss_by_position

    seed = f", seed {next(iter(seeds))}" if len(seeds) == 1 and None not in seeds else ""
    starts = "every window start" if every == 1 else f"a 1/{every} share of the window starts"
    plot_loss_by_position({label: (curve, None) for label, curve in curves.items()}, path,
                          f"val loss by position, from {starts}{seed}")


def main(argv=None) -> int:
    from .checkpoint import load_checkpoint, load_model
    from .config import Parser, at_least, checked
    from .device import DEVICES, describe_device, resolve_device
    from .exits import friendly_errors

    parser = Parser(prog="python -m course.measures", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("positions", "window", "speed"),
                        help="the val loss by position in the window, what task 08's stream costs in quality, or "
                             "how fast it streams")
    parser.add_argument("--checkpoint", nargs="+", default=["checkpoints/task07.pt"],
                        help="the model, or several (default: %(default)s)")
    parser.add_argument("--chars", type=checked(int, at_least(2)), default=5000,
                        help="window: characters of the validation split; speed: characters streamed (default: 5000)")
    parser.add_argument("--every", type=checked(int, at_least(1)), default=4,
                        help="positions: measure runs of window starts, one in every N (1: every start, block_size "
                             "times a whole-split evaluation; default: 4)")
    parser.add_argument("--figure", default=None,
                        help="positions: draw each checkpoint's smooth curve into this PNG")
    parser.add_argument("--device", default="auto", choices=DEVICES, help="where the model runs (default: auto)")
    args = parser.parse_args(argv)
    if args.figure and args.what != "positions":
        parser.error(f"--figure draws the loss by position: python -m course.measures positions ... --figure {args.figure}")
    with friendly_errors():  # a missing or foreign checkpoint: a message, not a traceback
        device = resolve_device(args.device)
        print(f"device: {describe_device(device)}", flush=True)
        if args.figure:
            from .files import check_writable

            check_writable(args.figure, "--figure")  # before minutes of measuring
        curves, seeds = {}, set()
        for path in args.checkpoint:
            model, tokenizer = load_model(path, device, "python -m course.measures")
            if len(args.checkpoint) > 1:
                print(f"{path}:", flush=True)
            if args.what == "positions":
                label = model_label(model)
                curves[label if label not in curves else f"{label}, {path}"] = print_loss_by_position(model, tokenizer,
                                                                                                     args.every)
                seeds.add(load_checkpoint(path, mmap=True).get("config", {}).get("seed"))
            elif args.what == "window":
                print_stream_cost(model, tokenizer, args.chars)
            else:
                print(format_speed(stream_speed(model, args.chars)))
        if args.figure:
            draw_positions(curves, seeds, args.every, args.figure)
            print(f"loss by position: {args.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
