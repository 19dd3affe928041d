import math

import pytest
import torch
import torch.nn as nn

from gpt.errors import UserError
from gpt.model import (MLP, AttentionHead, Block, FeedForward, LanguageModel, MultiHeadAttention,
                       causal_attention, causal_attention_weights)

B, T, C, NH, V = 3, 8, 32, 4, 65


def assert_causal(fn, x, t):
    """Changing inputs after position t must not change outputs up to t."""
    x2 = x.clone()
    x2[:, t + 1:] = torch.randn_like(x2[:, t + 1:]) if x.is_floating_point() else torch.randint_like(x2[:, t + 1:], V)
    out1, out2 = fn(x), fn(x2)
    diff = (out1[:, :t + 1] - out2[:, :t + 1]).abs().max().item()
    assert diff < 1e-6, f"output at positions <= {t} changed by {diff} when later inputs changed"
    assert not torch.allclose(out1[:, t + 1:], out2[:, t + 1:]), "later outputs should depend on later inputs"


def blocks():
    return {
        "plain": Block(C, MultiHeadAttention(C, NH, T, proj=False), FeedForward(C), layout="plain"),
        "residual": Block(C, MultiHeadAttention(C, NH, T), MLP(C), layout="residual"),
        "pre_ln": Block(C, MultiHeadAttention(C, NH, T), MLP(C), layout="pre_ln"),
    }


@pytest.mark.parametrize("t", [0, 3, T - 2])
def test_head_is_causal(t):
    assert_causal(AttentionHead(C, C, T), torch.randn(B, T, C), t)


@pytest.mark.parametrize("t", [0, 3, T - 2])
def test_multi_head_attention_is_causal(t):
    assert_causal(MultiHeadAttention(C, NH, T), torch.randn(B, T, C), t)


@pytest.mark.parametrize("layout", Block.LAYOUTS)
def test_each_block_variant_is_causal(layout):
    block = blocks()[layout]
    for t in (0, 4, T - 2):
        assert_causal(block, torch.randn(B, T, C), t)


def test_whole_model_is_causal():
    body = nn.Sequential(*blocks().values())
    model = LanguageModel(V, T, C, body, final_norm=True)
    for t in (0, 4, T - 2):
        assert_causal(lambda idx: model(idx)[0], torch.randint(V, (B, T)), t)


def test_batched_heads_equal_separate_heads_with_the_same_weights():
    mha = MultiHeadAttention(C, NH, T, proj=False)
    hs = C // NH
    heads = [AttentionHead(C, hs, T) for _ in range(NH)]
    wq, wk, wv = mha.qkv.weight.detach().split(C, dim=0)  # each (C, C): rows h*hs:(h+1)*hs belong to head h
    with torch.no_grad():
        for h, head in enumerate(heads):
            rows = slice(h * hs, (h + 1) * hs)
            head.query.weight.copy_(wq[rows])
            head.key.weight.copy_(wk[rows])
            head.value.weight.copy_(wv[rows])
    x = torch.randn(B, T, C)
    batched = mha(x)
    separate = torch.cat([head(x) for head in heads], dim=-1)
    diff = (batched - separate).abs().max().item()
    assert torch.allclose(batched, separate, atol=1e-6), f"max difference {diff}"


def test_attention_rows_sum_to_one_and_ignore_the_future():
    q, k = torch.randn(2, NH, T, 8), torch.randn(2, NH, T, 8)
    w = causal_attention_weights(q, k)
    assert torch.allclose(w.sum(-1), torch.ones(2, NH, T), atol=1e-6)
    assert torch.all(w.triu(diagonal=1) == 0)
    assert torch.allclose(w[..., 0, 0], torch.ones(2, NH))  # the first token can only read itself


def test_fused_attention_equals_the_explicit_math():
    q, k, v = torch.randn(3, 2, NH, T, 8).unbind(0)
    expected = causal_attention_weights(q, k) @ v
    diff = (causal_attention(q, k, v) - expected).abs().max().item()
    assert diff < 1e-5, f"max difference {diff}"


def test_attention_scale_is_inverse_sqrt_head_size():
    q = torch.zeros(1, 2, 4)
    q[0, 1, 0] = 1.0
    k = torch.zeros(1, 2, 4)
    k[0, 1, 0] = 2.0  # score of token 1 with itself: 1*2 / sqrt(4) = 1, with token 0: 0
    w = causal_attention_weights(q, k)
    assert torch.allclose(w[0, 1], torch.softmax(torch.tensor([0.0, 1.0]), 0))


def test_dropout_is_active_in_train_mode_and_off_in_eval_mode():
    body = nn.Sequential(Block(C, MultiHeadAttention(C, NH, T, dropout=0.5), MLP(C, dropout=0.5)))
    model = LanguageModel(V, T, C, body, final_norm=True, dropout=0.5)
    idx = torch.randint(V, (B, T))
    model.train()
    assert not torch.equal(model(idx)[0], model(idx)[0]), "train mode should drop different units each call"
    model.eval()
    assert torch.equal(model(idx)[0], model(idx)[0]), "eval mode must be deterministic"


def test_loss_at_initialisation_is_near_ln_vocab():
    torch.manual_seed(1337)
    body = nn.Sequential(*[Block(C, MultiHeadAttention(C, NH, T), MLP(C)) for _ in range(3)])
    model = LanguageModel(V, T, C, body, final_norm=True)
    idx = torch.randint(V, (64, T))
    _, loss = model(idx, torch.randint(V, (64, T)))
    assert abs(loss.item() - math.log(V)) < 0.25, f"initial loss {loss.item():.3f}, ln(65) = {math.log(V):.3f}"


def test_model_overfits_one_batch():
    torch.manual_seed(0)
    body = nn.Sequential(*[Block(C, MultiHeadAttention(C, NH, T), MLP(C)) for _ in range(2)])
    model = LanguageModel(V, T, C, body, final_norm=True)
    x, y = torch.randint(V, (4, T)), torch.randint(V, (4, T))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(300):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05, f"loss on one memorised batch is still {loss.item():.3f}"


def test_sequence_longer_than_block_size_is_refused():
    model = LanguageModel(V, T, C, AttentionHead(C, C, T))
    with pytest.raises(UserError, match="exceeds block_size 8"):
        model(torch.zeros(1, T + 1, dtype=torch.long))


def test_shorter_sequences_use_the_first_positions():
    model = LanguageModel(V, T, C, AttentionHead(C, C, T)).eval()
    idx = torch.randint(V, (1, T))
    full, _ = model(idx)
    short, _ = model(idx[:, :3])
    assert torch.allclose(full[:, :3], short, atol=1e-6)


def test_n_embd_not_divisible_by_n_head_fails_at_construction():
    with pytest.raises(UserError, match=r"n_embd \(30\) must be divisible by n_head \(4\)"):
        MultiHeadAttention(30, 4, T)


def test_unknown_block_layout_is_refused():
    with pytest.raises(UserError, match="layout"):
        Block(C, MultiHeadAttention(C, NH, T), MLP(C), layout="post_ln")
