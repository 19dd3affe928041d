import torch
import torch.nn as nn

from gpt.generate import generate, sample_next
from gpt.model import MLP, Block, LanguageModel, MultiHeadAttention

V, T, C = 30, 8, 16


def model():
    torch.manual_seed(0)
    body = nn.Sequential(Block(C, MultiHeadAttention(C, 2, T), MLP(C)))
    return LanguageModel(V, T, C, body, final_norm=True)


def test_generation_runs_past_block_size():
    m = model()
    out = generate(m, torch.zeros(1, 1, dtype=torch.long), 5 * T)
    assert out.shape == (1, 1 + 5 * T)
    assert int(out.min()) >= 0 and int(out.max()) < V


def test_generation_restores_the_mode():
    m = model().train()
    generate(m, torch.zeros(1, 1, dtype=torch.long), 3)
    assert m.training


def test_same_generator_seed_same_text():
    m = model()
    ctx = torch.zeros(1, 1, dtype=torch.long)
    a = generate(m, ctx, 40, generator=torch.Generator().manual_seed(3))
    b = generate(m, ctx, 40, generator=torch.Generator().manual_seed(3))
    c = generate(m, ctx, 40, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_greedy_and_top_k():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    assert sample_next(logits, temperature=0).item() == 1
    assert sample_next(logits, top_k=1).item() == 1
    g = torch.Generator().manual_seed(0)
    picks = {sample_next(logits, top_k=2, generator=g).item() for _ in range(200)}
    assert picks == {1, 3}, "top-k 2 must only ever pick the two most likely tokens"
