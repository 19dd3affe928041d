"""The measures learners compare, over a whole split with every position scored once: loss,
perplexity, bits per character and top-1 / top-5 accuracy of the next token; and the loss at each
position of the window, which shows how much the context helps.

Loss and perplexity are per token, so they depend on the tokenizer; bits per character divide the
same total by the number of characters of the text instead, so a character-level model and a
subword (BPE) model can be compared.

    python -m gpt.measures positions --checkpoint checkpoints/task09.pt   # the val loss by position
    python -m gpt.measures window --checkpoint checkpoints/task09.pt      # what task 08's stream costs
    python -m gpt.measures speed --checkpoint checkpoints/gru.pt          # task 08's characters per second
"""

import itertools
import math
import time

import torch
import torch.nn.functional as F

from .errors import UserError
from .model import eval_mode
from .train import EVAL_TOKENS


@torch.inference_mode()
def measure(model, ids: torch.Tensor, n_chars: int, block_size: int) -> dict:
    """Score ids[1:] (each predicted once, from the tokens before it in its window) in eval mode.

    ids[0] is context only: pass the split with the token before it (the last token of the split
    before, or of nothing), so that every token of the split is predicted. The text is cut into
    consecutive windows of block_size tokens, so each position sees between 0 and block_size - 1
    tokens of context, as in training. n_chars: the characters those predicted tokens spell.

    loss_by_position[t]: the mean loss of the predictions made from t tokens of context (position t of
    the full windows). The loss is their mean over positions, so a longer block_size lowers it even if
    the model predicts no better from the same context.
    """
    device = next(model.parameters()).device
    x_all, y_all = ids[:-1], ids[1:]
    n = len(y_all)
    windows = [(x_all[i:i + block_size], y_all[i:i + block_size]) for i in range(0, n, block_size)]
    full = [w for w in windows if len(w[0]) == block_size]
    per_forward = max(1, EVAL_TOKENS.get(device.type, EVAL_TOKENS["default"]) // block_size)
    batches = [full[i:i + per_forward] for i in range(0, len(full), per_forward)]
    batches += [[w] for w in windows if len(w[0]) < block_size]  # the short last window on its own
    with eval_mode(model):
        nll, top1, top5 = 0.0, 0, 0
        by_position = torch.zeros(block_size, dtype=torch.float64)  # summed over the full windows
        for batch in batches:
            x = torch.stack([w[0] for w in batch]).to(device)  # (N, T)
            y = torch.stack([w[1] for w in batch]).to(device)  # (N, T)
            logits, _ = model(x)  # (N, T, V)
            logits = logits.float().flatten(0, 1)  # (N*T, V)
            y = y.flatten()  # (N*T,)
            token_nll = F.cross_entropy(logits, y, reduction="none")  # (N*T,)
            nll += token_nll.sum().item()
            if x.size(1) == block_size:
                by_position += token_nll.view(len(batch), block_size).sum(0).cpu().double()  # MPS has no float64
            best = logits.topk(min(5, logits.size(-1)), dim=-1).indices  # (N*T, 5)
            top1 += (best[:, 0] == y).sum().item()
            top5 += (best == y[:, None]).any(dim=-1).sum().item()
    loss = nll / n
    return {"tokens": n, "chars": n_chars, "loss": loss, "perplexity": math.exp(loss),
            "bits_per_char": bits_per_char(nll, n_chars), "top1": top1 / n, "top5": top5 / n,
            "loss_by_position": (by_position / max(1, len(full))).tolist()}


def bits_per_char(nats: float, n_chars: int) -> float:
    """A text's total loss in nats, as bits per character of the text: comparable across tokenizers."""
    return nats / math.log(2) / n_chars


def measure_val(model, data, block_size: int) -> dict:
    """measure() over a Dataset's whole validation split: its first token predicted from the last
    training token, so that every validation token is scored once."""
    return measure(model, torch.cat([data.train[-1:], data.val]), data.val_chars, block_size)


def format_measures(split: str, m: dict) -> str:
    """One line in a fixed format, e.g.
    val (111,540 characters): loss 2.0612 | perplexity 7.86 | 2.974 bits/char | top-1 40.1% | top-5 76.3%"""
    size = f"{m['chars']:,} characters" + (f", {m['tokens']:,} tokens" if m["tokens"] != m["chars"] else "")
    return (f"{split} ({size}): loss {m['loss']:.4f} | perplexity {m['perplexity']:.2f} | "
            f"{m['bits_per_char']:.3f} bits/char | top-1 {100 * m['top1']:.1f}% | top-5 {100 * m['top5']:.1f}%")


def shakespeare_for(tokenizer, what: str):
    """Tiny Shakespeare, for a character-level model of it (the one tokenizer these measures read)."""
    from .data import load_dataset

    data = load_dataset()
    if data.tokenizer.to_dict() != tokenizer.to_dict():
        raise UserError(f"{what} reads Tiny Shakespeare's validation split: give a character-level model of it")
    return data


def stream_cost(model, tokenizer, n_chars: int, log=print) -> dict:
    """Bits per character of the validation text when task 08's stream reads it: each next character
    scored from the logits the stream computes, then the text's own character fed on. With the cache
    and by recomputing the last block_size characters: what the cache's way of handling a full window
    costs in quality."""
    from .generate import stream, stream_without_cache

    data = shakespeare_for(tokenizer, "window")
    text = data.val[:n_chars].tolist()
    log(f"{len(text) - 1} characters of the validation split, block_size {model.block_size}")
    results = {}
    for name, way in (("cache", stream), ("recompute", stream_without_cache)):
        nll, feed = 0.0, iter(text[1:])

        def pick(logits):  # score the text's next character, then feed it on
            nonlocal nll
            token = next(feed)
            nll -= F.log_softmax(logits[0].float(), dim=-1)[token].item()
            return token

        for _ in itertools.islice(way(model, text[:1], pick), len(text) - 1):
            pass
        results[name] = bits_per_char(nll, len(text) - 1)
        log(f"  {name:>9}: {results[name]:.4f} bits/char")
    return results


def stream_speed(model, n_chars: int = 5000, edge: int = 500, seed: int = 1337) -> dict:
    """Characters per second of task 08's stream (sampled at temperature 1, from token 0), over its
    first `edge` characters (the prefill included), its last `edge` of n_chars, and all of them:
    whether a character costs more as the stream goes on."""
    from .generate import sampler, stream

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


def loss_by_position(model, tokenizer, log=print) -> list[float]:
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
    import argparse

    from .checkpoint import load_checkpoint, model_from_checkpoint
    from .config import Parser, at_least, checked
    from .device import DEVICES, describe_device, resolve_device
    from .exits import friendly_errors

    parser = Parser(prog="python -m gpt.measures", description=__doc__,
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
            loss_by_position(model, tokenizer)
        elif args.what == "window":
            stream_cost(model, tokenizer, args.chars)
        else:
            print(format_speed(stream_speed(model, args.chars)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
