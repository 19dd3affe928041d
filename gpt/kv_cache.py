"""Task 08: a key/value cache, so that each new character costs a forward pass of one position.

Without it, every new token runs the whole window through the model again, although the keys and
values of the tokens before it came out the same last time. `KVCache` keeps them, per layer; the
model's own forward takes it (`model(idx, cache=cache)`) and then runs on the new tokens only:
each attention layer adds their keys and values to its part of the cache, and their queries read
every key it holds.

A model with learned positions (task 07) knows positions 0..block_size-1 only, and a cached key
carries its position in it, so the cache fills up after block_size tokens: `gpt.generate.stream`
then starts a new one from the newest half of the window. Task 09's rotary model has a cache of its
own that never fills (gpt/modern.py).
"""

import torch
import torch.nn.functional as F

from .errors import UserError


class KVCache:
    """Keys and values of every layer for the tokens seen so far: (n_layer, B, nh, block_size, hs)
    each, allocated once. `length` counts the tokens the cache holds."""

    def __init__(self, n_layer: int, n_head: int, block_size: int, head_size: int, batch: int = 1,
                 device="cpu", dtype=torch.float32):
        self.k = torch.zeros(n_layer, batch, n_head, block_size, head_size, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.length = 0

    @classmethod
    def for_model(cls, model, batch: int = 1):
        """A cache sized for model: its layers, heads, head size and window, on its device."""
        sa = model.blocks[0].sa
        param = next(model.parameters())
        return cls(len(model.blocks), sa.n_head, model.block_size, sa.head_size, batch, param.device, param.dtype)

    @property
    def block_size(self) -> int:
        return self.k.size(3)

    def full(self) -> bool:
        """Whether a new token would need a position past the window."""
        return self.length >= self.block_size

    def layer(self, i: int) -> "LayerCache":
        """The part of the cache that attention layer i reads and writes."""
        return LayerCache(self, i)

    def store(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Keep the new tokens' k, v (B, nh, T, hs) for layer; return every key and value the layer
        now holds, (B, nh, W, hs) each, oldest first."""
        start, end = self.length, self.length + k.size(2)
        if end > self.block_size:
            raise UserError(f"the key/value cache holds {self.block_size} positions; {end} were asked for")
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n_tokens: int) -> None:
        """Called by the model after every layer has stored the new tokens."""
        self.length += n_tokens


class LayerCache:
    """One attention layer's view of a KVCache: where its new tokens start, and attention over what it holds."""

    def __init__(self, cache: KVCache, layer: int):
        self.cache, self.index = cache, layer

    @property
    def start(self) -> int:
        return self.cache.length  # the position of the first new token

    def attend(self, q, k, v) -> torch.Tensor:
        """Store the new tokens' k, v, then let their queries q (B, nh, T, hs) read every key up to
        their own position: (B, nh, T, hs)."""
        k, v = self.cache.store(self.index, k, v)  # (B, nh, W, hs): the window, the new tokens included
        return attention_to_window(q, k, v)


def attention_to_window(q, k, v) -> torch.Tensor:
    """Causal attention of the last Tq positions (q) over a window of Tk >= Tq keys and values: query i
    reads the keys up to its own position, Tk - Tq + i."""
    Tq, Tk = q.size(-2), k.size(-2)
    if Tq == Tk:  # the first tokens, into an empty cache
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if Tq == 1:  # the newest token reads every key in the window
        return F.scaled_dot_product_attention(q, k, v)
    mask = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril(diagonal=Tk - Tq)  # (Tq, Tk)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
