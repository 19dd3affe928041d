"""Task 09: rotary position embeddings, and other changes from recent papers, each its own class.

    Rotary, RotaryAttention   RoPE: queries and keys turned by their position, no position table
    RotaryGPT                 task 07's GPT with RotaryAttention and no position table
                              (Su et al. 2021, https://arxiv.org/abs/2104.09864)
    RingKVCache               task 08's cache for a rotary model: a ring that never fills
    ReLUSquaredMLP            the MLP with relu(x)^2 (So et al. 2021, Primer, https://arxiv.org/abs/2109.08668)
    SwiGLU                    a gated MLP (Shazeer 2020, https://arxiv.org/abs/2002.05202)
    tie_weights               the embedding table reused as the output layer
                              (Press & Wolf 2016, https://arxiv.org/abs/1608.05859)
    Muon                      an optimizer that orthogonalises each weight matrix's update
                              (Jordan et al. 2024, https://kellerjordan.github.io/posts/muon/)

The schedules (warmup-stable-decay among them) are in gpt/schedules.py. Task 09's script composes
these classes as its command line asks; RESEARCH_LOG.md has the A/B and the screens that decided
which are on by default.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import UserError
from .kv_cache import KVCache
from .model import GPT, MLP, CausalSelfAttention, DropoutBlock, causal_attention, causal_attention_weights, check_length
from .model import concat_heads, init_weights, language_model_loss


def rope_angles(start: int, length: int, head_size: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotation angles p * base^(-2i/hs) for positions p = start..start+length-1:
    each (length, hs/2). Computed in float64, so that they stay exact far past block_size."""
    inv_freq = base ** -(torch.arange(0, head_size, 2, dtype=torch.float64) / head_size)  # (hs/2,)
    angles = torch.outer(torch.arange(start, start + length, dtype=torch.float64), inv_freq)  # (T, hs/2)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Turn each channel pair (x[..., i], x[..., i + hs/2]) of x (..., T, hs) by its position's angle.

    A rotation keeps the vector's length, and the dot product of a query turned for position m with a
    key turned for position n depends only on m - n: attention sees relative positions.
    """
    x1, x2 = x.chunk(2, dim=-1)  # (..., T, hs) -> 2 x (..., T, hs/2)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).type_as(x)  # (..., T, hs)


class Rotary(nn.Module):
    """Rotary position embedding of one head size; the angles of positions 0..block_size-1 are kept."""

    def __init__(self, head_size: int, block_size: int):
        super().__init__()
        if head_size % 2:
            raise UserError(f"RoPE turns channel pairs: the head size n_embd // n_head = {head_size} must be even")
        self.head_size = head_size
        cos, sin = rope_angles(0, block_size, head_size)
        self.register_buffer("cos", cos, persistent=False)  # (block_size, hs/2), rebuilt, never saved
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, x, start: int = 0):
        """x (..., T, hs) at positions start..start+T-1 -> the same, turned."""
        T = x.size(-2)
        if start + T <= self.cos.size(0):
            cos, sin = self.cos[start:start + T], self.sin[start:start + T]  # (T, hs/2)
        else:  # past the table: a stream that slides its window (gpt/kv_cache.py) goes on forever
            cos, sin = (t.to(x.device) for t in rope_angles(start, T, self.head_size))
        return apply_rope(x, cos, sin)


class RotaryAttention(CausalSelfAttention):
    """Task 07's attention with queries and keys turned by their position (RoPE) before they meet."""

    def __init__(self, n_embd: int, n_head: int, block_size: int, dropout: float):
        super().__init__(n_embd, n_head, dropout)
        self.rotary = Rotary(self.head_size, block_size)  # New

    def forward(self, x, cache=None):
        q, k, v = self.queries_keys_values(x)  # 3 x (B, nh, T, hs)
        start = 0 if cache is None else cache.start  # the position of x's first token
        q, k = self.rotary(q, start), self.rotary(k, start)  # New: (B, nh, T, hs), turned by position
        if cache is None:
            out = causal_attention(q, k, v, self.dropout if self.training else 0.0, self.fused)  # (B, nh, T, hs)
        else:
            out = cache.attend(q, k, v)  # (B, nh, T, hs)
        return self.proj(concat_heads(out))  # (B, T, C)

    def attention_weights(self, x):
        q, k, _ = self.queries_keys_values(x)
        return causal_attention_weights(self.rotary(q), self.rotary(k))


class ReLUSquared(nn.Module):
    def forward(self, x):
        return F.relu(x).square()


class ReLUSquaredMLP(MLP):
    """Task 05's MLP with relu(x)^2 as its non-linearity (Primer's squared ReLU)."""

    def __init__(self, n_embd: int):
        super().__init__(n_embd)
        self.net[1] = ReLUSquared()  # New


class SwiGLU(nn.Module):
    """A gated MLP: silu(x W1) * (x W3), then W2. The hidden size is 2/3 of 4 n_embd, so that its three
    matrices hold as many weights as the MLP's two."""

    def __init__(self, n_embd: int):
        super().__init__()
        hidden = 8 * n_embd // 3
        self.gate = nn.Linear(n_embd, hidden)
        self.up = nn.Linear(n_embd, hidden)
        self.down = nn.Linear(hidden, n_embd)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))  # (B, T, C) -> (B, T, H) -> (B, T, C)


MLPS = {"relu": MLP, "relu2": ReLUSquaredMLP, "swiglu": SwiGLU}  # task 09's --mlp


class RotaryGPT(nn.Module):
    """Task 09: task 07's GPT with rotary positions in every attention layer instead of the position
    table. mlp is the class of each block's MLP (task 05's MLP, ReLUSquaredMLP or SwiGLU)."""

    def __init__(self, vocab_size: int, block_size: int, n_embd: int, n_head: int, n_layer: int,
                 dropout: float = 0.0, mlp: type = MLP):
        super().__init__()
        self.args = dict(vocab_size=vocab_size, block_size=block_size, n_embd=n_embd, n_head=n_head,
                         n_layer=n_layer, dropout=dropout, mlp=mlp.__name__)  # what a checkpoint needs to rebuild it
        self.block_size = block_size
        self.token_embedding = nn.Embedding(vocab_size, n_embd)  # New: no position table
        self.blocks = nn.Sequential(*[
            DropoutBlock(RotaryAttention(n_embd, n_head, block_size, dropout), mlp(n_embd), n_embd, dropout)
            for _ in range(n_layer)
        ])
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size)
        self.apply(init_weights)

    def forward(self, idx, targets=None, cache=None):
        """idx (B, T) -> logits (B, T, V), and the loss if targets are given; with a cache, idx holds
        only the new tokens. Positions come in inside attention, so any window length up to
        block_size is read the same way wherever it starts."""
        T = check_length(idx, self.block_size)
        x = self.token_embedding(idx)  # (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, None if cache is None else cache.layer(i))  # (B, T, C)
        logits = self.lm_head(self.ln_f(x))  # (B, T, C) -> (B, T, V)
        if cache is not None:
            cache.advance(T)
        return logits, language_model_loss(logits, targets)

    def new_cache(self, batch: int = 1):
        """A ring cache: a query-key score depends only on the two tokens' offset, so a cached key is
        valid wherever the window is, and the window can slide one token at a time, forever."""
        return RingKVCache.for_model(self, batch)


POSITIONS = {"rope": RotaryGPT, "learned": GPT}  # task 09's --positions: learned is task 07's GPT, the A/B's other arm


def tie_weights(model: nn.Module) -> nn.Module:
    """Use model's token embedding table as its output layer too: one (V, C) table to read tokens and
    write them. The checkpoint records it, so that the model is rebuilt tied."""
    model.lm_head.weight = model.token_embedding.weight
    model.args["tie_weights"] = True
    return model


class RingKVCache(KVCache):
    """Task 08's cache for a rotary model. Position p is kept in slot p % block_size: once the window
    is full, the newest token's key and value replace those of the token block_size positions before
    it, and every new token reads a full window, at a constant cost."""

    def full(self) -> bool:
        return False  # a ring never fills

    def store(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        if k.size(2) > 1 or self.length < self.block_size:  # a prompt, or a window not yet full
            return super().store(layer, k, v)
        slot = self.length % self.block_size
        self.k[layer, :, :, slot:slot + 1] = k
        self.v[layer, :, :, slot:slot + 1] = v
        return self.k[layer], self.v[layer]  # (B, nh, block_size, hs), in slot order: one query reads them all


def orthogonalize(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """About U V^T for g = U S V^T: the update with every singular value set near 1, by a Newton-Schulz
    iteration (only matmuls) whose coefficients make small singular values grow fast."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g / (g.norm() + 1e-7)  # singular values now at most 1
    wide = x.size(0) <= x.size(1)
    x = x if wide else x.T  # (m, n) with m <= n, so that x @ x.T is the small product
    for _ in range(steps):
        gram = x @ x.T  # (m, m)
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x if wide else x.T


class Muon(torch.optim.Optimizer):
    """Momentum, then each weight matrix's update orthogonalised, so that it moves every direction of
    the matrix by about the same amount. For the 2-D weights inside the blocks; embeddings, the output
    layer, biases and LayerNorms stay with AdamW (as its authors advise)."""

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(p.grad)
                update = orthogonalize(p.grad.add(buf, alpha=group["momentum"]))  # Nesterov momentum
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(update, alpha=-group["lr"] * max(1.0, p.size(0) / p.size(1)) ** 0.5)


class Optimizers:
    """Several optimizers stepped as one, for the loop: Muon for the block matrices, AdamW for the rest."""

    def __init__(self, *optimizers):
        self.optimizers = optimizers

    @property
    def param_groups(self):
        return [g for o in self.optimizers for g in o.param_groups]

    def zero_grad(self, set_to_none: bool = True):
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self):
        for o in self.optimizers:
            o.step()

    def state_dict(self):
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state):
        for o, s in zip(self.optimizers, state["optimizers"]):
            o.load_state_dict(s)


def muon_optimizer(model: nn.Module, learning_rate: float, muon_lr: float, weight_decay: float):
    """Muon for the weight matrices inside the blocks, AdamW (learning_rate) for everything else. The
    schedule scales both: each group's lr_scale says how its rate relates to learning_rate."""
    from .train import make_optimizer

    matrices = [p for name, p in model.named_parameters() if name.startswith("blocks.") and p.dim() == 2]
    others = [p for name, p in model.named_parameters() if not (name.startswith("blocks.") and p.dim() == 2)]
    muon = Muon(matrices, lr=muon_lr, weight_decay=weight_decay)
    for group in muon.param_groups:
        group["lr_scale"] = muon_lr / learning_rate
    return Optimizers(muon, make_optimizer(others, learning_rate, weight_decay))
