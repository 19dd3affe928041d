"""Sampling text from a trained model, one token at a time.

`generate` is the lecture's way: the whole context (cropped to block_size) runs through the model
for every new token. `stream` (task 08) goes on forever with the model's key/value cache
(gpt/kv_cache.py), or an RNN's hidden state (gpt/rnn.py); `stream_without_cache` goes on forever
the lecture's way, to compare with it.
"""

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from .errors import UserError
from .model import eval_mode


def next_token_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                     top_p: float | None = None) -> torch.Tensor:
    """The next-token distribution these settings sample from: logits (B, V) -> probabilities (B, V).

    temperature 0 (or top_k 1) is greedy: all on the likeliest token. Otherwise the logits are divided
    by the temperature; top_k keeps the k likeliest tokens; top_p keeps the smallest set of likeliest
    tokens whose probabilities add up to at least p (nucleus sampling, Holtzman et al. 2019,
    https://arxiv.org/abs/1904.09751). The tokens left out get 0, and what is kept is not renormalised
    (torch.multinomial draws in proportion to it): divide by the sum to read it as probabilities.
    """
    if temperature <= 0 or top_k == 1:
        return F.one_hot(logits.argmax(dim=-1), logits.size(-1)).to(logits.dtype)  # (B, V)
    logits = (logits - logits.max(dim=-1, keepdim=True).values) / temperature  # shifted: no overflow for tiny temperatures
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)  # (B, V)
    if top_p is not None:
        sorted_probs, order = probs.sort(dim=-1, descending=True)  # (B, V) each
        before = sorted_probs.cumsum(dim=-1) - sorted_probs  # probability of the likelier tokens
        drop = (before >= top_p).scatter(-1, order, before >= top_p)  # (B, V), in vocabulary order
        probs = probs.masked_fill(drop, 0.0)
    return probs


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row from logits (B, V), drawn from next_token_probs (greedy at temperature 0)."""
    if temperature <= 0 or top_k == 1:
        return logits.argmax(dim=-1, keepdim=True)  # (B, 1)
    probs = next_token_probs(logits, temperature, top_k, top_p)  # (B, V)
    if generator is not None and generator.device != probs.device:
        # torch.multinomial needs a generator on the probabilities' device: sample on the CPU instead
        return torch.multinomial(probs.cpu(), 1, generator=generator).to(probs.device)
    return torch.multinomial(probs, 1, generator=generator)  # (B, 1)


@torch.no_grad()
def generate(model, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Extend idx (B, T) by max_new_tokens tokens, each sampled from the model's next-token distribution.

    The context is cropped to the last block_size tokens, so generation can run past block_size. The
    whole context is recomputed for every new token: simple, and fast enough for 500 characters.
    """
    with eval_mode(model):
        for _ in range(max_new_tokens):
            logits, _ = model(idx[:, -model.block_size:])  # (B, <=block_size) -> (B, T, V)
            idx_next = sample_next(logits[:, -1, :], temperature, top_k, generator=generator)  # (B, 1)
            idx = torch.cat((idx, idx_next), dim=1)  # (B, T+1)
    return idx


def sampler(temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
            generator: torch.Generator | None = None):
    """How `stream` picks each next token, by default: pick(logits (1, V)) -> a token id, sampled."""
    return lambda logits: sample_next(logits, temperature, top_k, top_p, generator).item()


@torch.no_grad()
def stream(model, prompt: list[int], pick=None) -> Iterator[int]:
    """Yield one token after another, forever: the caller decides when to stop. pick(logits) chooses
    each token from the model's next-token logits (1, V): `sampler(...)` by default; a measurement can
    pass one that returns the text's own next token instead.

    Each new token costs one forward pass of a single position, through what the model carries from
    one call to the next (`model.new_cache()`): a GPT's key/value cache, or an RNN's hidden state
    (gpt/rnn.py), which never fills, so that every token is read with all of the stream before it
    (and the prompt's last block_size tokens). When a key/value cache is full (learned positions
    can't move their cached keys) we keep the newest half of the window, compute its keys and values
    again from position 0 (one forward pass of block_size/2 tokens) and go on: once every
    block_size/2 tokens, so the cost per token stays bounded and every token sees at least
    block_size/2 tokens of context. A rotary model's cache is a ring that never fills: once
    block_size tokens are in, every token sees a full window, and nothing is computed again.
    """
    model.eval()
    pick = pick or sampler()
    device = next(model.parameters()).device
    window = first_window(prompt, model.block_size)
    cache = model.new_cache()
    logits, _ = model(torch.tensor([window], device=device), cache=cache)  # prefill: (1, T, V)
    while True:
        token = pick(logits[:, -1])
        yield token
        window = (window + [token])[-model.block_size:]
        if cache.full():  # keep the window's newest half and compute it again from position 0
            window = window[-max(1, model.block_size // 2):]
            cache = model.new_cache()
            logits, _ = model(torch.tensor([window], device=device), cache=cache)
        else:
            logits, _ = model(torch.tensor([[token]], device=device), cache=cache)  # (1, 1, V)


@torch.no_grad()
def stream_without_cache(model, prompt: list[int], pick=None) -> Iterator[int]:
    """`stream` the lecture's way: the last block_size tokens run through the model for every new
    token. Every token sees a full window (once there is one), at block_size times the cost."""
    model.eval()
    pick = pick or sampler()
    device = next(model.parameters()).device
    window = first_window(prompt, model.block_size)
    while True:
        logits, _ = model(torch.tensor([window], device=device))  # (1, T, V)
        token = pick(logits[:, -1])
        window = (window + [token])[-model.block_size:]
        yield token


def first_window(prompt: list[int], block_size: int) -> list[int]:
    window = list(prompt)[-block_size:]
    if not window:
        raise UserError("the prompt is empty: give at least one character to start from")
    return window
