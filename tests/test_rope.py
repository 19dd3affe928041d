import itertools

import pytest
import torch

from gpt.errors import UserError
from gpt.generate import generate, stream
from gpt.model import MultiHeadAttention, apply_rope, gpt_model, rope_tables

HS, T = 16, 32


def test_rotation_preserves_norms():
    cos, sin = rope_tables(T, HS)
    x = torch.randn(3, 4, T, HS)
    assert torch.allclose(apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1), atol=1e-5)


def test_position_zero_is_not_rotated_and_later_ones_are():
    cos, sin = rope_tables(T, HS)
    x = torch.randn(1, T, HS)
    rotated = apply_rope(x, cos, sin)
    assert torch.allclose(rotated[:, 0], x[:, 0])
    assert not torch.allclose(rotated[:, 5], x[:, 5])


@pytest.mark.parametrize("m,n,s", [(5, 2, 7), (10, 10, 3), (0, 20, 11), (3, 9, 22)])
def test_score_depends_only_on_the_offset(m, n, s):
    cos, sin = rope_tables(64, HS)
    q, k = torch.randn(HS), torch.randn(HS)

    def score(pm, pn):
        return apply_rope(q, cos[pm], sin[pm]) @ apply_rope(k, cos[pn], sin[pn])

    assert score(m, n) == pytest.approx(score(m + s, n + s), abs=1e-4)
    assert score(m, n) != pytest.approx(score(m + s, n), abs=1e-3)


def test_rope_model_is_causal_and_has_no_position_table():
    torch.manual_seed(0)
    model = gpt_model(30, T, 32, 2, 2, positions="rope").eval()
    assert model.position_embedding is None
    assert not any("rope" in k for k in model.state_dict()), "the tables are rebuilt, not saved"
    idx = torch.randint(30, (2, T))
    idx2 = idx.clone()
    idx2[:, 11:] = torch.randint(30, (2, T - 11))
    a, b = model(idx)[0], model(idx2)[0]
    assert torch.allclose(a[:, :11], b[:, :11], atol=1e-6) and not torch.allclose(a[:, 11:], b[:, 11:])


def test_rope_cached_and_uncached_greedy_generation_agree():
    torch.manual_seed(1)
    model = gpt_model(30, 16, 32, 4, 2, positions="rope").eval()
    cached = list(itertools.islice(stream(model, [3], temperature=0), 16))
    full = generate(model, torch.tensor([[3]]), 16, temperature=0)[0, 1:].tolist()
    assert cached == full


def test_learned_positions_are_unchanged_by_the_option():
    """The default is the model every earlier task trained: same parameters, same outputs."""
    torch.manual_seed(2)
    a = gpt_model(30, T, 32, 4, 2)
    torch.manual_seed(2)
    b = gpt_model(30, T, 32, 4, 2, positions="learned")
    idx = torch.randint(30, (2, T))
    assert a.state_dict().keys() == b.state_dict().keys()
    assert torch.equal(a.eval()(idx)[0], b.eval()(idx)[0])


def test_odd_head_size_and_unknown_positions_are_refused():
    with pytest.raises(UserError, match="must be even"):
        MultiHeadAttention(30, 2, T, positions="rope")
    with pytest.raises(UserError, match="unknown positions"):
        MultiHeadAttention(32, 2, T, positions="alibi")


def test_task09_compare_prints_both_arms(small_text_file, tmp_path, capsys):
    import task09_rope

    finals = task09_rope.main(["--compare", "--seeds", "2", "--data", str(small_text_file), "--time-budget", "0",
                               "--max-iters", "4", "--eval-interval", "3", "--eval-iters", "1", "--n-embd", "16",
                               "--n-head", "2", "--n-layer", "1", "--block-size", "16", "--batch-size", "2",
                               "--device", "cpu", "--checkpoint", str(tmp_path / "t9.pt")])
    out = capsys.readouterr().out
    assert len(finals["learned"]) == len(finals["rope"]) == 2
    assert "=== positions=rope, seed 1338 ===" in out and "| mean ± std |" in out
    assert (tmp_path / "t9.pt").exists()
    from gpt.checkpoint import load_checkpoint
    assert load_checkpoint(tmp_path / "t9.pt")["model_config"]["positions"] == "rope"
