"""Sampling text from a trained model, one token at a time."""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from .errors import UserError
from .model import KVCache, MultiHeadAttention


@torch.no_grad()
def generate(model, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Extend idx (B, T) by max_new_tokens tokens, each sampled from the model's next-token distribution.

    The context is cropped to the last block_size tokens, so generation can run past block_size. The
    whole context is recomputed for every new token: simple, and fast enough for 500 characters.
    """
    was_training = model.training
    model.eval()
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -model.block_size:]  # (B, T) -> (B, <=block_size)
        logits, _ = model(idx_cond)  # (B, T, V)
        idx_next = sample_next(logits[:, -1, :], temperature, top_k, generator)  # (B, 1)
        idx = torch.cat((idx, idx_next), dim=1)  # (B, T+1)
    model.train(was_training)
    return idx


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row from logits (B, V): temperature 0 (or top_k 1) is greedy."""
    if temperature <= 0 or top_k == 1:
        return logits.argmax(dim=-1, keepdim=True)  # (B, 1)
    logits = (logits - logits.max(dim=-1, keepdim=True).values) / temperature  # shifted: no overflow for tiny temperatures
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)  # (B, V)
    if generator is not None and generator.device != probs.device:
        # torch.multinomial needs a generator on the probabilities' device: sample on the CPU instead
        return torch.multinomial(probs.cpu(), 1, generator=generator).to(probs.device)
    return torch.multinomial(probs, 1, generator=generator)  # (B, 1)


@contextmanager
def kv_cache(model, batch: int = 1):
    """Give every attention layer of model a key/value cache for the duration of the block."""
    layers = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    if not layers:
        raise UserError("this model's attention has no key/value cache (only MultiHeadAttention has one)")
    param = next(model.parameters())

    def reset():
        for m in layers:
            m.cache = KVCache(batch, m.n_head, model.block_size, m.head_size, param.device, param.dtype)

    reset()
    try:
        yield reset
    finally:
        for m in layers:
            m.cache = None


@torch.no_grad()
def stream(model, prompt: list[int], temperature: float = 1.0, top_k: int | None = None,
           generator: torch.Generator | None = None, use_cache: bool = True) -> Iterator[int]:
    """Yield one sampled token after another, forever: the caller decides when to stop.

    With use_cache, each new token costs one forward pass of a single position: its query reads the
    keys and values that every layer cached for the tokens before it. The model learned absolute
    positions 0..block_size-1 only, so when the window is full we keep its most recent half,
    recompute that half's keys and values from position 0 (one forward pass of block_size/2 tokens),
    and go on. That recomputation happens once every block_size/2 tokens, so the cost per token stays
    bounded however long the stream runs, and every token still sees at least block_size/2 tokens of
    context. (Recomputing the whole window for every token, as `generate` does, always sees a full
    window but costs a block_size-token forward pass per token.)
    """
    model.eval()
    device = next(model.parameters()).device
    block_size = model.block_size
    window = list(prompt)[-block_size:]  # the tokens whose keys and values are in the cache
    if not window:
        raise UserError("the prompt is empty: give at least one character to start from")
    if not use_cache:
        while True:
            logits, _ = model(torch.tensor([window[-block_size:]], device=device))
            token = sample_next(logits[:, -1], temperature, top_k, generator).item()
            window = window[-block_size:] + [token]
            yield token
    with kv_cache(model) as reset:
        logits, _ = model(torch.tensor([window], device=device))  # prefill: (1, T, V)
        while True:
            token = sample_next(logits[:, -1], temperature, top_k, generator).item()
            yield token
            if len(window) < block_size:
                logits, _ = model(torch.tensor([[token]], device=device), start_pos=len(window))  # (1, 1, V)
                window.append(token)
            else:  # window full: keep the most recent half and recompute its cache from position 0
                window = window[len(window) - block_size // 2 + 1:] + [token]
                reset()
                logits, _ = model(torch.tensor([window], device=device))
