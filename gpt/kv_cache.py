"""Task 08: a key/value cache, so that each new character costs a forward pass of one position.

Without it, every new token runs the whole window through the model again, although the keys and
values of the tokens before it came out the same last time. `KVCache` keeps them, per layer, and
`forward_cached` runs the model on the new tokens only: their queries read every cached key.

How far back can a token look? The window holds block_size tokens. When it is full:
- learned positions (task 07): the model knows positions 0..block_size-1 only, and a cached key
  carries its position in it, so keys can't move. `gpt.generate.stream` keeps the newest half of the
  window and computes it again from position 0, once every block_size/2 tokens.
- rotary positions (task 09): a query-key score depends only on how far apart the two tokens are,
  so every cached key stays valid wherever the window is. The cache is a ring: the newest token's
  key and value overwrite the oldest, and every token reads a full window, at a constant cost.
"""

import torch

from .errors import UserError
from .model import causal_attention, concat_heads
from .modern import RotaryAttention


class KVCache:
    """Keys and values of every layer for the tokens in the window: (n_layer, B, nh, block_size, hs)
    each, allocated once. `length` counts the tokens the cache has seen.

    rolling=True makes it a ring (rotary models only): position p is kept in slot p % block_size,
    so that the newest token replaces the one block_size positions before it.
    """

    def __init__(self, n_layer: int, n_head: int, block_size: int, head_size: int, batch: int = 1,
                 device="cpu", dtype=torch.float32, rolling: bool = False):
        self.k = torch.zeros(n_layer, batch, n_head, block_size, head_size, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.length = 0
        self.rolling = rolling

    @classmethod
    def for_model(cls, model, batch: int = 1) -> "KVCache":
        """A cache sized for model, rolling if its attention is rotary."""
        sa = model.blocks[0].sa
        param = next(model.parameters())
        return cls(len(model.blocks), sa.n_head, model.block_size, sa.head_size, batch, param.device, param.dtype,
                   rolling=isinstance(sa, RotaryAttention))

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store the new tokens' k, v (B, nh, T, hs) for layer; return the window's keys and values,
        (B, nh, W, hs) each, oldest first (in a ring that has come round: in slot order, which a single
        query reads all of, so the order doesn't matter)."""
        block_size, start, T = self.k.size(3), self.length, k.size(2)
        if self.rolling and T == 1:
            slot = start % block_size
            self.k[layer, :, :, slot:slot + 1] = k
            self.v[layer, :, :, slot:slot + 1] = v
            n = min(start + 1, block_size)
        else:
            n = start + T
            if n > block_size:
                raise UserError(f"the key/value cache holds {block_size} positions; {n} were asked for")
            self.k[layer, :, :, start:n] = k
            self.v[layer, :, :, start:n] = v
        return self.k[layer, :, :, :n], self.v[layer, :, :, :n]


@torch.no_grad()
def forward_cached(model, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """Logits (B, T, V) for the new tokens idx (B, T), which come right after the cache's tokens.

    The same computation as GPT.forward and DropoutBlock.forward in eval mode (tests compare the
    logits), with the cache in the middle of attention: each layer adds the new tokens' keys and
    values to it and lets their queries read all it holds.
    """
    start, T = cache.length, idx.size(1)
    x = model.token_embedding(idx)  # (B, T, C)
    if hasattr(model, "position_embedding"):
        if start + T > model.block_size:
            raise UserError(f"learned positions stop at {model.block_size - 1}; start the window again")
        x = x + model.position_embedding.weight[start:start + T]  # the positions of the new tokens
    for layer, block in enumerate(model.blocks):
        sa = block.sa
        q, k, v = sa.heads(block.ln1(x))  # 3 x (B, nh, T, hs)
        if isinstance(sa, RotaryAttention):
            q, k = sa.rotary(q, start), sa.rotary(k, start)  # turned for their positions start..start+T-1
        k, v = cache.update(layer, k, v)  # (B, nh, W, hs): the window, the new tokens included
        x = x + sa.proj(concat_heads(causal_attention(q, k, v)))  # (B, T, C)
        x = x + block.ffwd(block.ln2(x))
    cache.length += T
    return model.lm_head(model.ln_f(x))  # (B, T, V)
