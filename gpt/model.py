"""The parts of a GPT, one class per idea, in the order the course teaches them.

    task 00  Bigram                  each character predicts the next from itself alone
    task 01  AttentionHead           one head of causal self-attention
    task 02  MultiHeadAttention      several heads side by side
    task 03  FeedForward             a Linear + ReLU per token, after attention
    task 04  Block                   attention then feed-forward, stacked
    task 05  ResidualBlock           x = x + attn(x); x = x + mlp(x), with ProjectedAttention and MLP
    task 06  PreLNBlock              a LayerNorm before each sub-layer
    task 07  GPT                     all of it at scale, with dropout (DropoutBlock, CausalSelfAttention)

`LanguageModel` wraps the body of tasks 01-06 between the embeddings and the linear head.
Task 08's key/value cache is in `gpt/kv_cache.py`, task 09's rotary positions in `gpt/modern.py`.

Shapes: B batch, T time (sequence length), C channels (n_embd), nh heads, hs head size, V vocabulary.
"""

from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import UserError
from .kv_cache import KVCache


def causal_attention_weights(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(hs)) with the future masked out: row t says how much token t reads from each s <= t.
    The lecture's arithmetic, as task 01's head writes it out."""
    T = q.size(-2)
    wei = q @ k.transpose(-2, -1) * k.size(-1) ** -0.5  # (..., T, hs) @ (..., hs, T) -> (..., T, T)
    wei = wei.masked_fill(~causal_mask(T, q.device), float("-inf"))  # (..., T, T)
    return F.softmax(wei, dim=-1)  # (..., T, T), each row sums to 1


def causal_mask(T: int, device) -> torch.Tensor:
    """(T, T), True where query t may read key s: s <= t (the lecture's tril)."""
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


def causal_attention(q, k, v, dropout: float = 0.0, fused: bool = True) -> torch.Tensor:
    """Causal scaled dot-product attention of every head at once: (..., T, hs) queries, keys and values
    -> (..., T, hs), dropout (a probability) on the weights.

    fused: PyTorch's scaled_dot_product_attention, one kernel (flash attention on a GPU), faster where
    speed matters; otherwise the lecture's arithmetic written out. The two agree to rounding (tests
    check it)."""
    if fused:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
    wei = causal_attention_weights(q, k)  # (..., T, T)
    return F.dropout(wei, dropout) @ v  # (..., T, T) @ (..., T, hs) -> (..., T, hs)


class Bigram(nn.Module):
    """Task 00: each character's logits for the next character are looked up from a table by the
    character itself. No context, no positions: what a model learns from pairs of characters alone."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.block_size = 1  # it only ever reads the last character
        self.logits_table = nn.Embedding(vocab_size, vocab_size)  # row i: the next-character logits after i

    def forward(self, idx, targets=None):
        logits = self.logits_table(idx)  # (B, T) -> (B, T, V)
        return logits, language_model_loss(logits, targets)


class AttentionHead(nn.Module):
    """Task 01: one head of causal self-attention. Each token emits a query ("what am I looking for?")
    and a key ("what do I contain?"), and gathers the values of the tokens up to itself, weighted by
    how well its query matches their keys."""

    def __init__(self, n_embd: int, head_size: int):
        super().__init__()
        self.key = nn.Linear(n_embd, head_size, bias=False)
        self.query = nn.Linear(n_embd, head_size, bias=False)
        self.value = nn.Linear(n_embd, head_size, bias=False)

    def forward(self, x):
        B, T, C = x.shape
        k = self.key(x)  # (B, T, C) -> (B, T, hs)
        q = self.query(x)  # (B, T, C) -> (B, T, hs)
        # how much each token reads from each other one: its query against their keys, scaled by 1/sqrt(hs)
        wei = q @ k.transpose(-2, -1) * k.size(-1) ** -0.5  # (B, T, hs) @ (B, hs, T) -> (B, T, T)
        wei = wei.masked_fill(~causal_mask(T, x.device), float("-inf"))  # no token reads the future
        wei = F.softmax(wei, dim=-1)  # (B, T, T), each row sums to 1
        v = self.value(x)  # (B, T, C) -> (B, T, hs)
        return wei @ v  # (B, T, T) @ (B, T, hs) -> (B, T, hs)

    def attention_weights(self, x):
        """The weights this head's forward applies to its values: (B, 1, T, T), one head."""
        return causal_attention_weights(self.query(x), self.key(x)).unsqueeze(1)


class MultiHeadAttention(nn.Module):
    """Task 02: n_head attention heads side by side, each of size n_embd // n_head, their outputs
    concatenated.

    The lesson's code keeps a list of `AttentionHead`s and concatenates what each returns. Here the
    heads' queries, keys and values come out of one Linear, and the heads are a dimension of one
    tensor, so that all of them run in one batched matmul; tests prove it equals separate
    `AttentionHead`s with the same weights. From here on attention runs PyTorch's fused kernel
    (`fused`); set it to False to run the lecture's arithmetic written out, which gives the same numbers.
    """

    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        if n_embd % n_head != 0:
            raise UserError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head}): each head gets n_embd // n_head channels")
        self.n_head = n_head
        self.head_size = n_embd // n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=False)  # rows: all heads' queries, then keys, then values
        self.fused = True  # causal_attention's fused kernel, or (False) the arithmetic written out

    def queries_keys_values(self, x):
        """Queries, keys and values of every head: (B, T, C) -> 3 x (B, nh, T, hs)."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=-1)  # (B, T, 3C) -> 3 x (B, T, C)
        return [t.view(B, T, self.n_head, self.head_size).transpose(1, 2) for t in (q, k, v)]  # (B, nh, T, hs)

    def forward(self, x):
        q, k, v = self.queries_keys_values(x)  # 3 x (B, nh, T, hs)
        out = causal_attention(q, k, v, fused=self.fused)  # (B, nh, T, hs): each head attends on its own
        return concat_heads(out)  # (B, T, C)

    def attention_weights(self, x):
        """The weights each head's forward applies to its values: (B, nh, T, T)."""
        q, k, _ = self.queries_keys_values(x)
        return causal_attention_weights(q, k)


def concat_heads(out: torch.Tensor) -> torch.Tensor:
    """The heads' outputs side by side: (B, nh, T, hs) -> (B, T, nh * hs)."""
    B, nh, T, hs = out.shape
    return out.transpose(1, 2).reshape(B, T, nh * hs)  # (B, nh, T, hs) -> (B, T, nh, hs) -> (B, T, C)


class FeedForward(nn.Module):
    """Task 03: after the tokens have gathered information from each other (attention), each token
    thinks about it on its own: one Linear + ReLU, the same for every position."""

    def __init__(self, n_embd: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_embd, n_embd), nn.ReLU())

    def forward(self, x):
        return self.net(x)  # (B, T, C) -> (B, T, C)


class Block(nn.Module):
    """Task 04: communication (attention across tokens) followed by computation (per token)."""

    def __init__(self, sa: nn.Module, ffwd: nn.Module):
        super().__init__()
        self.sa = sa
        self.ffwd = ffwd

    def forward(self, x):
        return self.ffwd(self.sa(x))


class ProjectedAttention(MultiHeadAttention):
    """Task 05: multi-head attention whose concatenated heads go through one more Linear, the output
    projection, which mixes what the heads found before it is added to the residual stream."""

    def __init__(self, n_embd: int, n_head: int):
        super().__init__(n_embd, n_head)
        self.proj = nn.Linear(n_embd, n_embd)  # New

    def forward(self, x):
        return self.proj(super().forward(x))  # (B, T, C) -> (B, T, C)


class MLP(nn.Module):
    """Task 05: the Transformer's feed-forward network, 4x wider inside: n_embd -> 4 n_embd -> n_embd."""

    def __init__(self, n_embd: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.ReLU(), nn.Linear(4 * n_embd, n_embd))

    def forward(self, x):
        return self.net(x)  # (B, T, C) -> (B, T, 4C) -> (B, T, C)


class ResidualBlock(Block):
    """Task 05: each sub-layer adds what it computes to a residual stream instead of replacing it, so
    the gradient flows straight from the loss to the embeddings and deep stacks train well
    (He et al. 2015, https://arxiv.org/abs/1512.03385)."""

    def forward(self, x):
        x = x + self.sa(x)
        x = x + self.ffwd(x)
        return x


class PreLNBlock(ResidualBlock):
    """Task 06: each sub-layer reads a LayerNorm of the residual stream (pre-LN, Xiong et al. 2020,
    https://arxiv.org/abs/2002.04745): every token's vector normalised to zero mean and unit variance,
    then scaled and shifted by learned parameters."""

    def __init__(self, sa: nn.Module, ffwd: nn.Module, n_embd: int):
        super().__init__(sa, ffwd)
        self.ln1 = nn.LayerNorm(n_embd)  # New
        self.ln2 = nn.LayerNorm(n_embd)  # New

    def forward(self, x):
        x = x + self.sa(self.ln1(x))
        x = x + self.ffwd(self.ln2(x))
        return x


class LanguageModel(nn.Module):
    """Tasks 01-06: token embedding + learned position embedding -> body -> linear head to the vocabulary.

    `body` is whatever the step is about: one head, multi-head attention, a stack of blocks.
    """

    def __init__(self, vocab_size: int, block_size: int, n_embd: int, body: nn.Module):
        super().__init__()
        self.block_size = block_size
        self.token_embedding = nn.Embedding(vocab_size, n_embd)
        self.position_embedding = nn.Embedding(block_size, n_embd)
        self.body = body
        self.lm_head = nn.Linear(n_embd, vocab_size)

    def forward(self, idx, targets=None):
        """idx (B, T) -> logits (B, T, V), and the loss if targets are given."""
        T = check_length(idx, self.block_size)
        x = self.token_embedding(idx) + self.position_embedding(torch.arange(T, device=idx.device))  # (B, T, C)
        logits = self.lm_head(self.body(x))  # (B, T, C) -> (B, T, V)
        return logits, language_model_loss(logits, targets)


def check_length(idx: torch.Tensor, block_size: int, start: int = 0) -> int:
    """idx's length T, if positions start..start+T-1 are positions the model has."""
    T = idx.size(1)
    if start + T > block_size:
        raise UserError(
            f"sequence length {start + T} exceeds block_size {block_size}: the model has no position "
            f"embedding past {block_size - 1}; crop the context to the last {block_size} tokens"
        )
    return T


def language_model_loss(logits: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor | None:
    """Cross-entropy of the next-token logits (B, T, V) against targets (B, T); None without targets."""
    if targets is None:
        return None
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())  # (B*T, V) vs (B*T,)


class CausalSelfAttention(ProjectedAttention):
    """Task 07: task 05's attention with dropout on the attention weights: during training each
    token randomly ignores some of the tokens it would read (Srivastava et al. 2014,
    https://jmlr.org/papers/v15/srivastava14a.html; placed as in Vaswani et al. 2017).

    Task 08 passes a key/value cache (gpt/kv_cache.py) when it generates: the new tokens' keys and
    values join the cached ones, and the new queries read them all.
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float):
        super().__init__(n_embd, n_head)
        self.dropout = dropout  # New: the probability of dropping an attention weight

    def extra_repr(self):
        return f"dropout={self.dropout}"

    def forward(self, x, cache=None):
        q, k, v = self.queries_keys_values(x)  # 3 x (B, nh, T, hs)
        if cache is None:  # training, and the lecture's generate: every position at once
            out = causal_attention(q, k, v, self.dropout if self.training else 0.0, self.fused)  # (B, nh, T, hs)
        else:  # task 08: the new tokens read the cached ones too
            out = cache.attend(q, k, v)  # (B, nh, T, hs)
        return self.proj(concat_heads(out))  # (B, T, C)


class DropoutBlock(PreLNBlock):
    """Task 07: task 06's block with dropout on what each sub-layer adds to the residual stream."""

    def __init__(self, sa: nn.Module, ffwd: nn.Module, n_embd: int, dropout: float):
        super().__init__(sa, ffwd, n_embd)
        self.dropout = nn.Dropout(dropout)  # New

    def forward(self, x, cache=None):
        x = x + self.dropout(self.sa(self.ln1(x), cache))
        x = x + self.dropout(self.ffwd(self.ln2(x)))
        return x


class GPT(nn.Module):
    """Task 07: the full GPT of the course: n_layer pre-LN blocks with dropout, a final LayerNorm,
    and the course's initialisation (normal, std 0.02, as GPT-2).

    mlp is the class of each block's MLP (task 05's by default; task 09 tries others). The model
    takes only plain values and a class, so that a checkpoint can store them and rebuild it.
    """

    def __init__(self, vocab_size: int, block_size: int, n_embd: int, n_head: int, n_layer: int,
                 dropout: float = 0.0, mlp: type = MLP):
        super().__init__()
        self.args = dict(vocab_size=vocab_size, block_size=block_size, n_embd=n_embd, n_head=n_head,
                         n_layer=n_layer, dropout=dropout, mlp=mlp.__name__)  # what a checkpoint needs to rebuild it
        self.block_size = block_size
        self.token_embedding = nn.Embedding(vocab_size, n_embd)
        self.position_embedding = nn.Embedding(block_size, n_embd)
        self.blocks = nn.Sequential(*[
            DropoutBlock(CausalSelfAttention(n_embd, n_head, dropout), mlp(n_embd), n_embd, dropout)
            for _ in range(n_layer)
        ])
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size)
        self.apply(init_weights)

    def forward(self, idx, targets=None, cache=None):
        """idx (B, T) -> logits (B, T, V), and the loss if targets are given. With a cache (task 08),
        idx holds only the new tokens, which come after the cache.length tokens it holds."""
        start = 0 if cache is None else cache.length
        T = check_length(idx, self.block_size, start)
        positions = torch.arange(start, start + T, device=idx.device)
        x = self.token_embedding(idx) + self.position_embedding(positions)  # (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, None if cache is None else cache.layer(i))  # (B, T, C)
        logits = self.lm_head(self.ln_f(x))  # (B, T, C) -> (B, T, V)
        if cache is not None:
            cache.advance(T)
        return logits, language_model_loss(logits, targets)

    def new_cache(self, batch: int = 1):
        """An empty key/value cache for this model (task 08)."""
        return KVCache.for_model(self, batch)


def init_weights(module: nn.Module) -> None:
    """GPT-2's initialisation, which the course's model uses: weights normal with std 0.02, biases 0."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@contextmanager
def eval_mode(model: nn.Module):
    """model in eval mode (dropout off) inside the block, and back in the mode it was in after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
