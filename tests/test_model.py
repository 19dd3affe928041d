import importlib
import inspect
import math

import pytest
import torch
import torch.nn as nn

from gpt.errors import UserError
from gpt.model import (GPT, MLP, AttentionHead, Bigram, Block, CausalSelfAttention, DropoutBlock, FeedForward,
                       LanguageModel, MultiHeadAttention, PreLNBlock, ProjectedAttention, ResidualBlock,
                       causal_attention, causal_attention_weights)
from gpt.modern import RotaryGPT

B, T, C, NH, V = 3, 8, 32, 4, 65


def assert_causal(fn, x, t):
    """Changing inputs after position t must not change outputs up to t."""
    x2 = x.clone()
    x2[:, t + 1:] = torch.randn_like(x2[:, t + 1:]) if x.is_floating_point() else torch.randint_like(x2[:, t + 1:], V)
    out1, out2 = fn(x), fn(x2)
    diff = (out1[:, :t + 1] - out2[:, :t + 1]).abs().max().item()
    assert diff < 1e-6, f"output at positions <= {t} changed by {diff} when later inputs changed"
    assert not torch.allclose(out1[:, t + 1:], out2[:, t + 1:]), "later outputs should depend on later inputs"


def each_block():
    """Every block the course teaches, built as its task builds it."""
    return {
        "Block (task 04)": Block(MultiHeadAttention(C, NH), FeedForward(C)),
        "ResidualBlock (task 05)": ResidualBlock(ProjectedAttention(C, NH), MLP(C)),
        "PreLNBlock (task 06)": PreLNBlock(ProjectedAttention(C, NH), MLP(C), C),
        "DropoutBlock (task 07)": DropoutBlock(CausalSelfAttention(C, NH, 0.1), MLP(C), C, 0.1).eval(),
    }


@pytest.mark.parametrize("t", [0, 3, T - 2])
def test_head_is_causal(t):
    assert_causal(AttentionHead(C, C), torch.randn(B, T, C), t)


@pytest.mark.parametrize("t", [0, 3, T - 2])
def test_multi_head_attention_is_causal(t):
    assert_causal(MultiHeadAttention(C, NH), torch.randn(B, T, C), t)


@pytest.mark.parametrize("name", list(each_block()))
def test_each_block_is_causal(name):
    block = each_block()[name]
    for t in (0, 4, T - 2):
        assert_causal(block, torch.randn(B, T, C), t)


def test_whole_models_are_causal():
    body = nn.Sequential(*each_block().values())
    for model in (LanguageModel(V, T, C, body), GPT(V, T, C, NH, 2).eval()):
        for t in (0, 4, T - 2):
            assert_causal(lambda idx: model(idx)[0], torch.randint(V, (B, T)), t)


def test_batched_heads_equal_separate_heads_with_the_same_weights():
    mha = MultiHeadAttention(C, NH)
    hs = C // NH
    heads = [AttentionHead(C, hs) for _ in range(NH)]
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
    for fused in (True, False):
        diff = (causal_attention(q, k, v, fused=fused) - expected).abs().max().item()
        assert diff < 1e-5, f"fused={fused}: max difference {diff}"


@pytest.mark.parametrize("make", [lambda: MultiHeadAttention(C, NH), lambda: CausalSelfAttention(C, NH, 0.0)])
def test_the_fused_kernel_and_the_lectures_arithmetic_give_the_same_attention(make):
    """The flag that picks the fused kernel (the default from task 02 on) or the arithmetic written out,
    as nanoGPT keeps both: the same outputs, and the same gradients, to rounding."""
    torch.manual_seed(0)
    attn = make()
    x = torch.randn(B, T, C, requires_grad=True)
    outs, grads = [], []
    for fused in (True, False):
        attn.fused = fused
        out = attn(x)
        outs.append(out)
        grads.append(torch.autograd.grad(out.square().sum(), x)[0])
    assert (outs[0] - outs[1]).abs().max().item() < 1e-5 and (grads[0] - grads[1]).abs().max().item() < 1e-4


def test_task_01s_head_writes_the_lectures_arithmetic_out_in_its_own_forward():
    """The head a learner reads at step 01 computes softmax(q k^T / sqrt(hs)) with the future masked,
    then @ v, in its own forward: it never calls the fused kernel."""
    import inspect

    source = inspect.getsource(AttentionHead.forward)
    assert "scaled_dot_product_attention" not in source and "causal_attention(" not in source
    for line in ("q @ k.transpose(-2, -1)", "masked_fill", "F.softmax(wei, dim=-1)", "wei @ v"):
        assert line in source, line


@pytest.mark.parametrize("make", [lambda: AttentionHead(C, C), lambda: MultiHeadAttention(C, NH)])
def test_attention_weights_are_what_the_forward_applies(make):
    """The spelled-out weights times the values give the fused forward's output, for the head and for all heads."""
    attn = make()
    x = torch.randn(B, T, C)
    w = attn.attention_weights(x)  # (B, nh, T, T)
    if isinstance(attn, AttentionHead):
        v = attn.value(x).unsqueeze(1)  # (B, 1, T, hs)
        expected = (w @ v).squeeze(1)
    else:
        v = attn.queries_keys_values(x)[2]  # (B, nh, T, hs)
        expected = (w @ v).transpose(1, 2).reshape(B, T, C)
    assert (attn(x) - expected).abs().max().item() < 1e-5


def test_attention_scale_is_inverse_sqrt_head_size():
    q = torch.zeros(1, 2, 4)
    q[0, 1, 0] = 1.0
    k = torch.zeros(1, 2, 4)
    k[0, 1, 0] = 2.0  # score of token 1 with itself: 1*2 / sqrt(4) = 1, with token 0: 0
    w = causal_attention_weights(q, k)
    assert torch.allclose(w[0, 1], torch.softmax(torch.tensor([0.0, 1.0]), 0))


def test_residual_block_adds_to_the_stream_and_pre_ln_normalises_its_input():
    """The lesson of task 05 (x + f(x)) and of task 06 (f reads LayerNorm(x)), checked with stand-in sub-layers."""
    x = torch.randn(B, T, C) * 5 + 3
    seen = []

    class Record(nn.Module):
        def forward(self, h):
            seen.append(h)
            return torch.zeros_like(h)

    assert torch.equal(ResidualBlock(Record(), Record())(x), x), "zero sub-layers must leave the stream as it is"
    assert torch.equal(seen[0], x)
    seen.clear()
    PreLNBlock(Record(), Record(), C)(x)
    assert seen[0].mean(-1).abs().max() < 1e-5 and (seen[0].std(-1, unbiased=False) - 1).abs().max() < 1e-3
    assert torch.equal(Block(Record(), nn.Identity())(x), torch.zeros_like(x)), "a plain block replaces the stream"


def test_dropout_is_active_in_train_mode_and_off_in_eval_mode():
    model = GPT(V, T, C, NH, 2, dropout=0.5)
    idx = torch.randint(V, (B, T))
    model.train()
    assert not torch.equal(model(idx)[0], model(idx)[0]), "train mode should drop different units each call"
    model.eval()
    assert torch.equal(model(idx)[0], model(idx)[0]), "eval mode must be deterministic"


def test_attention_weights_dropout_only_while_training():
    attn = CausalSelfAttention(C, NH, dropout=0.5)
    x = torch.randn(B, T, C)
    assert not torch.equal(attn(x), attn(x))
    attn.eval()
    assert torch.equal(attn(x), attn(x))
    assert torch.allclose(attn(x), ProjectedAttention.forward(attn, x), atol=1e-6), "in eval mode: task 05's attention"


@pytest.mark.parametrize("build", [
    lambda: LanguageModel(V, T, C, nn.Sequential(*[PreLNBlock(ProjectedAttention(C, NH), MLP(C), C) for _ in range(3)],
                                                 nn.LayerNorm(C))),
    lambda: GPT(V, T, C, NH, 3),
])
def test_loss_at_initialisation_is_near_ln_vocab(build):
    torch.manual_seed(1337)
    model = build()
    _, loss = model(torch.randint(V, (64, T)), torch.randint(V, (64, T)))
    assert abs(loss.item() - math.log(V)) < 0.25, f"initial loss {loss.item():.3f}, ln(65) = {math.log(V):.3f}"


def test_gpt_starts_from_the_course_initialisation():
    torch.manual_seed(0)
    model = GPT(V, T, 64, NH, 2)
    for name, p in model.named_parameters():
        if name.endswith("weight") and p.dim() == 2:
            assert abs(p.std().item() - 0.02) < 0.004, f"{name}: std {p.std().item():.4f}"
        if "ln" not in name and name.endswith("bias"):
            assert torch.all(p == 0), name


def test_gpt_of_the_course_size_has_its_parameter_count():
    assert sum(p.numel() for p in GPT(65, 256, 384, 6, 6, 0.2).parameters()) == 10_788_929


def test_model_overfits_one_batch():
    torch.manual_seed(0)
    model = GPT(V, T, C, NH, 2)
    x, y = torch.randint(V, (4, T)), torch.randint(V, (4, T))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(300):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05, f"loss on one memorised batch is still {loss.item():.3f}"


def test_bigram_predicts_from_the_current_character_only():
    model = Bigram(V)
    idx = torch.randint(V, (2, T))
    logits, _ = model(idx)
    assert torch.equal(logits, model.logits_table.weight[idx])
    other = idx.clone()
    other[:, :-1] = torch.randint(V, (2, T - 1))
    assert torch.equal(model(other)[0][:, -1], logits[:, -1]), "the context before the last character must not matter"


def test_sequence_longer_than_block_size_is_refused():
    for model in (LanguageModel(V, T, C, AttentionHead(C, C)), GPT(V, T, C, NH, 1)):
        with pytest.raises(UserError, match="exceeds block_size 8"):
            model(torch.zeros(1, T + 1, dtype=torch.long))


def test_shorter_sequences_use_the_first_positions():
    model = LanguageModel(V, T, C, AttentionHead(C, C)).eval()
    idx = torch.randint(V, (1, T))
    full, _ = model(idx)
    short, _ = model(idx[:, :3])
    assert torch.allclose(full[:, :3], short, atol=1e-6)


def test_n_embd_not_divisible_by_n_head_fails_at_construction():
    with pytest.raises(UserError, match=r"n_embd \(30\) must be divisible by n_head \(4\)"):
        MultiHeadAttention(30, 4)


TASK_MODELS = {  # what each task's model is made of, and nothing more
    "task01": {"AttentionHead"},
    "task02": {"MultiHeadAttention"},
    "task03": {"MultiHeadAttention", "FeedForward"},
    "task04": {"Block", "MultiHeadAttention", "FeedForward"},
    "task05": {"ResidualBlock", "ProjectedAttention", "MLP"},
    "task06": {"PreLNBlock", "ProjectedAttention", "MLP", "LayerNorm"},
}


@pytest.mark.parametrize("task", list(TASK_MODELS))
def test_each_task_model_holds_only_its_own_parts(task):
    module = importlib.import_module(task)
    model = module.build_model(module.CONFIG, V)
    kinds = {type(m).__name__ for m in model.modules()} - {"LanguageModel", "Sequential", "Linear", "Embedding", "ReLU"}
    assert kinds == TASK_MODELS[task], f"{task}: {sorted(kinds)}"
    text = str(model)
    assert "Identity" not in text and "Dropout" not in text and "rotary" not in text
    if task != "task06":
        assert "LayerNorm" not in text


def test_the_attention_of_tasks_01_to_07_knows_nothing_of_rope_and_only_task_07s_takes_a_cache():
    """Tasks 01-06 know nothing of rope or caches; task 07's attention and GPT know nothing of rope, and
    take task 08's key/value cache as an argument of their forward, holding none themselves."""
    for cls in (AttentionHead, MultiHeadAttention, ProjectedAttention):
        source = inspect.getsource(cls).lower()
        assert not any(word in source for word in ("rope", "rotary", "cache", "start")), cls.__name__
    for cls in (CausalSelfAttention, DropoutBlock, GPT):
        source = inspect.getsource(cls).lower()
        assert not any(word in source for word in ("rope", "rotary")), cls.__name__
        assert inspect.signature(cls.forward).parameters["cache"].default is None, cls.__name__
    attn = CausalSelfAttention(C, NH, 0.0)
    assert not any("rope" in k or "cache" in k for k in [*attn.state_dict(), *vars(attn)])
    model = GPT(V, T, C, NH, 1)
    assert not any("rope" in k or "rotary" in k or "cache" in k for k in [*model.state_dict(), *vars(model)])


@pytest.mark.parametrize("cls", [GPT, RotaryGPT])
def test_logits_through_a_kv_cache_token_by_token_equal_the_prompt_at_once(cls):
    """Task 08's cache, passed to the model's own forward: the prompt fed one token at a time into an
    empty cache gives, at every position, the logits of the whole prompt run at once."""
    torch.manual_seed(0)
    model = cls(V, T, C, NH, 2, dropout=0.1).eval()
    with torch.no_grad():  # away from the tiny initialisation, so that the tokens and positions matter
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    idx = torch.randint(V, (1, T))
    with torch.no_grad():
        at_once, _ = model(idx)
        cache = model.new_cache()
        one_by_one = torch.cat([model(idx[:, t:t + 1], cache=cache)[0] for t in range(T)], dim=1)
    assert cache.length == T
    diff = (one_by_one - at_once).abs().max().item()
    assert diff < 1e-5, f"max difference {diff}"
    assert at_once[0, 1:].sub(at_once[0, :1]).abs().max() > 1e-2, "each position's logits differ: the test sees them"
