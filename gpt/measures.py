"""The measures learners compare, over a whole split with every position scored once: loss,
perplexity, bits per character and top-1 / top-5 accuracy of the next token; and the loss at each
position of the window, which shows how much the context helps (`measure`'s, from consecutive
windows, and `loss_by_position`'s, smooth, from every window start).

Loss and perplexity are per token, so they depend on the tokenizer; bits per character divide the
same total by the number of characters of the text instead, so a character-level model and a
subword (BPE) model can be compared. (`python -m course.measures` prints them for a checkpoint.)
"""

import itertools
import math

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


@torch.inference_mode()
def loss_by_position(model, ids: torch.Tensor, block_size: int, every: int = 1) -> list[float]:
    """The mean loss at each position t of the window (the prediction made from t tokens of context),
    over windows of ids that start at every token: x = ids[s:s+block_size] predicts
    ids[s+1:s+block_size+1], for every s. In eval mode.

    measure() cuts the text into consecutive windows, so each position is averaged over its own
    1/block_size of the tokens (about 1,700 of the validation split's 111,540 at block 64): the curve
    mixes what the context does with which characters happen to fall at that position, and is jagged.
    From every start, each token is predicted from every amount of context, 0 to block_size - 1, so
    every position is averaged over the same tokens (all but the t first and the block_size - 1 - t
    last) and the curve shows what the context alone does.

    That costs block_size times measure()'s forward passes. every > 1 measures a 1/every share of them:
    runs of 4 * block_size consecutive starts, one run in every `every`, spread evenly over ids. Within
    a run every position still averages over nearly the same tokens, so the curve stays smooth; its
    level is that of the runs' part of the text (RESEARCH_LOG.md, 2026-12-03, has both measured). Every
    k-th start instead would give each position its own tokens again, and the curve its jaggedness.
    """
    n_windows = len(ids) - block_size
    if n_windows < 1:
        raise UserError(f"a text of {len(ids)} tokens holds no window of {block_size} tokens and the one after "
                        f"them: give a longer text")
    starts = window_starts(n_windows, block_size, every)
    device = next(model.parameters()).device
    per_forward = max(1, EVAL_TOKENS.get(device.type, EVAL_TOKENS["default"]) // block_size)
    total = torch.zeros(block_size, dtype=torch.float64)
    with eval_mode(model):
        for batch in starts.split(per_forward):
            chunk = ids[batch[:, None] + torch.arange(block_size + 1)].to(device)  # (N, T+1): windows, next token
            logits, _ = model(chunk[:, :-1])  # (N, T) -> (N, T, V)
            nll = F.cross_entropy(logits.float().flatten(0, 1), chunk[:, 1:].flatten(), reduction="none")  # (N*T,)
            total += nll.view(len(batch), block_size).sum(0).cpu().double()  # (T,); MPS has no float64
    return (total / len(starts)).tolist()


def window_starts(n_windows: int, block_size: int, every: int = 1) -> torch.Tensor:
    """The window starts loss_by_position measures: all of 0..n_windows-1, or runs of 4 * block_size
    consecutive ones, one run in every `every`."""
    s = torch.arange(n_windows)
    return s[(s // (4 * block_size)) % every == 0]


def loss_by_position_val(model, data, block_size: int, every: int = 1) -> list[float]:
    """loss_by_position() over a Dataset's validation split, from the last training token on (as
    measure_val), so that every validation token is predicted from each amount of context."""
    return loss_by_position(model, torch.cat([data.train[-1:], data.val]), block_size, every)


def bits_per_char(nats: float, n_chars: int) -> float:
    """A text's total loss in nats, as bits per character of the text: comparable across tokenizers."""
    return nats / math.log(2) / n_chars


def measure_val(model, data, block_size: int) -> dict:
    """measure() over a Dataset's whole validation split: its first token predicted from the last
    training token, so that every validation token is scored once."""
    return measure(model, torch.cat([data.train[-1:], data.val]), data.val_chars, block_size)


@torch.no_grad()
def stream_cost(model, ids: list[int], stream) -> float:
    """Bits per character of the text ids when task 08's stream (gpt.generate.stream, or
    stream_without_cache) reads it: each next character scored from the logits the stream computes,
    then the text's own character fed on. What a way of handling a full window costs in quality."""
    nll, feed = 0.0, iter(ids[1:])

    def pick(logits):  # score the text's next character, then feed it on
        nonlocal nll
        token = next(feed)
        nll -= F.log_softmax(logits[0].float(), dim=-1)[token].item()
        return token

    for _ in itertools.islice(stream(model, ids[:1], pick), len(ids) - 1):
        pass
    return bits_per_char(nll, len(ids) - 1)
