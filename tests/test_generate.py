import torch

from gpt.generate import generate, sample_next
from gpt.model import GPT

V, T, C = 30, 8, 16


def model():
    torch.manual_seed(0)
    return GPT(V, T, C, 2, 1)


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


def test_top_p_draws_only_from_the_smallest_set_that_reaches_p():
    """Probabilities 0.5, 0.25, 0.1875, 0.0625 (in a shuffled order): p = 0.4 needs only the likeliest,
    p = 0.7 the two likeliest (0.75 reaches it), p = 0.8 three (0.9375), p = 1 all four. Where the mass
    lands exactly on p (0.5, 0.75: exact in floating point) the set stops there."""
    probs = torch.tensor([[0.1875, 0.5, 0.0625, 0.25]])
    logits = probs.log()
    g = torch.Generator().manual_seed(0)
    for p, allowed in ((0.4, {1}), (0.5, {1}), (0.7, {1, 3}), (0.75, {1, 3}), (0.8, {0, 1, 3}), (1.0, {0, 1, 2, 3})):
        picks = {sample_next(logits, top_p=p, generator=g).item() for _ in range(400)}
        assert picks == allowed, f"top-p {p}: drew {sorted(picks)}"
    rows = sample_next(torch.cat([logits, logits.flip(-1)]), top_p=0.4, generator=g)
    assert rows.tolist() == [[1], [2]], "each row keeps its own nucleus"


def test_a_tiny_temperature_samples_the_likeliest_token():
    logits = torch.tensor([[0.5, 3.0, -2.0, 2.9]])
    for temperature in (1e-40, 1e-6):
        token = sample_next(logits, temperature, generator=torch.Generator().manual_seed(0))
        assert token.item() == 1
