"""The measures of a saved model, printed (the math is gpt/measures.py's):

    python -m course.measures positions --checkpoint checkpoints/task09.pt   # the val loss by position
    python -m course.measures window --checkpoint checkpoints/task09.pt      # what task 08's stream costs
    python -m course.measures speed --checkpoint checkpoints/gru.pt          # task 08's characters per second
"""

import argparse
import itertools
import time

import torch

from gpt.data import load_dataset
from gpt.errors import UserError
from gpt.generate import sampler, stream, stream_without_cache
from gpt.measures import measure_val, stream_cost


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


def print_loss_by_position(model, tokenizer, log=print) -> list[float]:
    """The validation loss by position in the window, in doubling ranges: how much the context helps,
    and what the loss averaged over a block_size window is made of."""
    m = measure_val(model, shakespeare_for(tokenizer, "positions"), model.block_size)
    by_position = m["loss_by_position"]
    log(f"val loss {m['loss']:.4f} over windows of {model.block_size}; by position (tokens of context):")
    start = 0
    while start < len(by_position):
        end = min(len(by_position), max(1, 2 * start))
        part = by_position[start:end]
        log(f"  {start:>4}-{end - 1:<4} {sum(part) / len(part):.4f}")
        start = end
    return by_position


def main(argv=None) -> int:
    from .checkpoint import load_checkpoint, model_from_checkpoint
    from .config import Parser, at_least, checked
    from .device import DEVICES, describe_device, resolve_device
    from .exits import friendly_errors

    parser = Parser(prog="python -m course.measures", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("positions", "window", "speed"),
                        help="the val loss by position in the window, what task 08's stream costs in quality, or "
                             "how fast it streams")
    parser.add_argument("--checkpoint", default="checkpoints/task07.pt", help="the model (default: %(default)s)")
    parser.add_argument("--chars", type=checked(int, at_least(2)), default=5000,
                        help="window: characters of the validation split; speed: characters streamed (default: 5000)")
    parser.add_argument("--device", default="auto", choices=DEVICES, help="where the model runs (default: auto)")
    args = parser.parse_args(argv)
    with friendly_errors():  # a missing or foreign checkpoint: a message, not a traceback
        device = resolve_device(args.device)
        print(f"device: {describe_device(device)}", flush=True)
        model, tokenizer = model_from_checkpoint(load_checkpoint(args.checkpoint), device)
        if args.what == "positions":
            print_loss_by_position(model, tokenizer)
        elif args.what == "window":
            print_stream_cost(model, tokenizer, args.chars)
        else:
            print(format_speed(stream_speed(model, args.chars)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
