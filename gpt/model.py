"""The parts of a GPT, each defined once; the task scripts compose them step by step.

Shapes: B batch, T time (sequence length), C channels (n_embd), nh heads, hs head size, V vocabulary.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import UserError


def causal_attention_weights(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(hs)) with the future masked out: row t says how much token t reads from each s <= t."""
    T = q.size(-2)
    scores = q @ k.transpose(-2, -1) * q.size(-1) ** -0.5  # (..., T, hs) @ (..., hs, T) -> (..., T, T)
    mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    scores = scores.masked_fill(~mask, float("-inf"))
    return F.softmax(scores, dim=-1)  # (..., T, T), each row sums to 1


def causal_attention(q, k, v, dropout: float = 0.0) -> torch.Tensor:
    """Causal scaled dot-product attention: (..., Tq, hs) with (..., Tk, hs) -> (..., Tq, hs).

    Same result as `causal_attention_weights(q, k) @ v` (tests check it), but computed by PyTorch's
    fused kernel, which at these sizes is faster on a CPU and uses flash attention on a GPU.
    With a key/value cache there are fewer queries than keys: the queries are the last Tq positions.
    """
    Tq, Tk = q.size(-2), k.size(-2)
    if Tq == Tk:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
    if Tq == 1:  # the newest token may read every cached one
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
    mask = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril(diagonal=Tk - Tq)  # (Tq, Tk)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)


def rope_tables(block_size: int, head_size: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotation angles pos * base^(-2i/hs): each (block_size, hs/2).

    Rotary position embeddings (Su et al. 2021, RoFormer, https://arxiv.org/abs/2104.09864) turn each
    pair of query/key channels (i, i + hs/2) by an angle that grows with the position, fast for the
    first pairs and slowly for the last ones.
    """
    inv_freq = base ** -(torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)  # (hs/2,)
    angles = torch.outer(torch.arange(block_size, dtype=torch.float32), inv_freq)  # (T, hs/2)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each channel pair (x[..., i], x[..., i + hs/2]) of x (..., T, hs) by its position's angle.

    A rotation keeps the vector's length, and the dot product of a query rotated for position m with a
    key rotated for position n depends only on m - n: attention sees relative positions.
    """
    x1, x2 = x.chunk(2, dim=-1)  # (..., T, hs) -> 2 x (..., T, hs/2)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).type_as(x)  # (..., T, hs)


class KVCache:
    """The keys and values one attention layer has computed so far, so that a new token only needs
    its own (task 08). Preallocated for block_size positions: appending never copies the past."""

    def __init__(self, batch: int, n_head: int, block_size: int, head_size: int, device, dtype):
        self.k = torch.zeros(batch, n_head, block_size, head_size, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.length = 0

    def append(self, k, v):
        """Store k, v (B, nh, T, hs) after the cached positions; return all keys and values so far."""
        end = self.length + k.size(2)
        if end > self.k.size(2):
            raise UserError(f"key/value cache holds {self.k.size(2)} positions; {end} asked for")
        self.k[:, :, self.length:end] = k
        self.v[:, :, self.length:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]  # (B, nh, end, hs) each


class AttentionHead(nn.Module):
    """One head of causal self-attention (task 01): each token gathers values from the tokens before it."""

    def __init__(self, n_embd: int, head_size: int, block_size: int, dropout: float = 0.0):
        super().__init__()
        self.block_size = block_size
        self.key = nn.Linear(n_embd, head_size, bias=False)
        self.query = nn.Linear(n_embd, head_size, bias=False)
        self.value = nn.Linear(n_embd, head_size, bias=False)
        self.dropout = dropout

    def forward(self, x):
        k = self.key(x)  # (B, T, C) -> (B, T, hs)
        q = self.query(x)  # (B, T, C) -> (B, T, hs)
        v = self.value(x)  # (B, T, C) -> (B, T, hs)
        return causal_attention(q, k, v, self.dropout if self.training else 0.0)  # (B, T, hs)


class MultiHeadAttention(nn.Module):
    """n_head attention heads side by side, computed together in one batched matmul.

    Equivalent to running n_head separate `AttentionHead`s of size n_embd // n_head and concatenating
    their outputs (tests prove it with the same weights), but with one Linear for all keys, queries
    and values instead of 3 * n_head small ones. `proj` adds the output projection (task 05 on).
    """

    POSITIONS = ("learned", "rope")

    def __init__(self, n_embd: int, n_head: int, block_size: int, proj: bool = True, dropout: float = 0.0,
                 positions: str = "learned"):
        super().__init__()
        if n_embd % n_head != 0:
            raise UserError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head}): each head gets n_embd // n_head channels")
        if positions not in self.POSITIONS:
            raise UserError(f"unknown positions {positions!r}; choose one of {', '.join(self.POSITIONS)}")
        self.n_head = n_head
        self.head_size = n_embd // n_head
        self.positions = positions
        if positions == "rope":
            if self.head_size % 2:
                raise UserError(f"RoPE rotates channel pairs: head size n_embd // n_head = {self.head_size} must be even")
            cos, sin = rope_tables(block_size, self.head_size)
            self.register_buffer("rope_cos", cos, persistent=False)  # (T, hs/2), rebuilt, never saved
            self.register_buffer("rope_sin", sin, persistent=False)
        self.block_size = block_size
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=False)  # rows: all heads' queries, then keys, then values
        self.proj = nn.Linear(n_embd, n_embd) if proj else nn.Identity()
        self.attn_dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)
        self.cache: KVCache | None = None  # set while streaming (gpt.generate.stream)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=-1)  # (B, T, C) -> 3 x (B, T, C)
        q = q.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, T, C) -> (B, nh, T, hs)
        k = k.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, T, C) -> (B, nh, T, hs)
        v = v.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, T, C) -> (B, nh, T, hs)
        if self.positions == "rope":
            start = self.cache.length if self.cache is not None else 0  # position of x's first token
            cos, sin = self.rope_cos[start:start + T], self.rope_sin[start:start + T]  # (T, hs/2)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # (B, nh, T, hs)
        if self.cache is not None:
            k, v = self.cache.append(k, v)  # (B, nh, T_past + T, hs)
        out = causal_attention(q, k, v, self.attn_dropout if self.training else 0.0)  # (B, nh, T, hs)
        out = out.transpose(1, 2).reshape(B, T, C)  # (B, nh, T, hs) -> (B, T, C): heads concatenated
        return self.resid_dropout(self.proj(out))


class FeedForward(nn.Module):
    """Task 03's computation step: one Linear + ReLU applied to each token on its own."""

    def __init__(self, n_embd: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_embd, n_embd), nn.ReLU())

    def forward(self, x):
        return self.net(x)


class MLP(nn.Module):
    """The Transformer's position-wise feed-forward network: n_embd -> 4 n_embd -> n_embd (task 05 on)."""

    def __init__(self, n_embd: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd),
            nn.ReLU(),
            nn.Linear(4 * n_embd, n_embd),
            nn.Dropout(dropout),
        )

    def forward(self, x):
        return self.net(x)


class Block(nn.Module):
    """Communication (attention across tokens) followed by computation (feed-forward per token).

    layout:
      "plain"    x = ffwd(attn(x))                                          (task 04)
      "residual" x = x + attn(x); x = x + ffwd(x)                           (task 05, He et al. 2015)
      "pre_ln"   x = x + attn(ln1(x)); x = x + ffwd(ln2(x))                 (task 06, Xiong et al. 2020)
    """

    LAYOUTS = ("plain", "residual", "pre_ln")

    def __init__(self, n_embd: int, attn: nn.Module, ffwd: nn.Module, layout: str = "pre_ln"):
        super().__init__()
        if layout not in self.LAYOUTS:
            raise UserError(f"unknown block layout {layout!r}; choose one of {', '.join(self.LAYOUTS)}")
        self.layout = layout
        self.attn = attn
        self.ffwd = ffwd
        pre_ln = layout == "pre_ln"
        self.ln1 = nn.LayerNorm(n_embd) if pre_ln else nn.Identity()
        self.ln2 = nn.LayerNorm(n_embd) if pre_ln else nn.Identity()

    def forward(self, x):
        if self.layout == "plain":
            return self.ffwd(self.attn(x))
        x = x + self.attn(self.ln1(x))
        x = x + self.ffwd(self.ln2(x))
        return x


class LanguageModel(nn.Module):
    """Token embedding + learned position embedding -> body -> optional final LayerNorm -> logits.

    `body` is whatever the step is about: one head, multi-head attention, a stack of blocks.
    With positions="rope" there is no position table: the attention layers rotate queries and keys.
    """

    def __init__(self, vocab_size: int, block_size: int, n_embd: int, body: nn.Module,
                 final_norm: bool = False, dropout: float = 0.0, positions: str = "learned"):
        super().__init__()
        self.block_size = block_size
        self.token_embedding = nn.Embedding(vocab_size, n_embd)
        self.position_embedding = nn.Embedding(block_size, n_embd) if positions == "learned" else None
        self.dropout = nn.Dropout(dropout)
        self.body = body
        self.ln_f = nn.LayerNorm(n_embd) if final_norm else nn.Identity()
        self.lm_head = nn.Linear(n_embd, vocab_size)

    def forward(self, idx, targets=None, start_pos: int = 0):
        """idx (B, T) -> logits (B, T, V) and the loss if targets are given. start_pos is the position of
        idx's first token: nonzero only when a key/value cache holds the tokens before it."""
        B, T = idx.shape
        if start_pos + T > self.block_size:
            raise UserError(
                f"sequence length {start_pos + T} exceeds block_size {self.block_size}: the model has no position "
                f"embedding past {self.block_size - 1}; crop the context to the last {self.block_size} tokens"
            )
        x = self.token_embedding(idx)  # (B, T) -> (B, T, C)
        if self.position_embedding is not None:
            x = x + self.position_embedding(torch.arange(start_pos, start_pos + T, device=idx.device))  # + (T, C)
        x = self.dropout(x)  # (B, T, C)
        x = self.body(x)  # (B, T, C)
        logits = self.lm_head(self.ln_f(x))  # (B, T, C) -> (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T))  # (B*T, V) vs (B*T,)
        return logits, loss


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def gpt_model(vocab_size: int, block_size: int, n_embd: int, n_head: int, n_layer: int,
              dropout: float = 0.0, positions: str = "learned") -> LanguageModel:
    """The full GPT that tasks 07 to 09 train: n_layer pre-LN blocks (attention with an output
    projection, then the 4x MLP), dropout in each part, and a final LayerNorm; positions "learned"
    (a table, tasks 01-07) or "rope" (rotary, task 09).

    Takes only plain values, so that a checkpoint can store them and rebuild the same model."""
    blocks = [
        Block(n_embd, MultiHeadAttention(n_embd, n_head, block_size, dropout=dropout, positions=positions),
              MLP(n_embd, dropout), layout="pre_ln")
        for _ in range(n_layer)
    ]
    return LanguageModel(vocab_size, block_size, n_embd, nn.Sequential(*blocks), final_norm=True, dropout=dropout,
                         positions=positions)
