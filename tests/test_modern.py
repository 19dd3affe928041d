import dataclasses

import pytest
import torch

from course.config import ModernGPTConfig
from gpt.errors import UserError
from gpt.model import GPT, MLP
from gpt.modern import (MLPS, POSITIONS, Muon, ReLUSquaredMLP, Rotary, RotaryAttention, RotaryGPT, SwiGLU, apply_rope,
                        muon_optimizer, orthogonalize, rope_angles, tie_weights)

HS, T = 16, 32


def test_rotation_preserves_norms():
    cos, sin = rope_angles(0, T, HS)
    x = torch.randn(3, 4, T, HS)
    assert torch.allclose(apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1), atol=1e-5)


def test_position_zero_is_not_rotated_and_later_ones_are():
    x = torch.randn(1, T, HS)
    rotated = Rotary(HS, T)(x)
    assert torch.allclose(rotated[:, 0], x[:, 0])
    assert not torch.allclose(rotated[:, 5], x[:, 5])


@pytest.mark.parametrize("m,n,s", [(5, 2, 7), (10, 10, 3), (0, 20, 11), (3, 9, 22), (40, 1, 5000)])
def test_score_depends_only_on_the_offset(m, n, s):
    rotary = Rotary(HS, 64)
    q, k = torch.randn(1, 1, HS), torch.randn(1, 1, HS)

    def score(pm, pn):  # positions past the table (5000 on) are computed on the fly
        return (rotary(q, start=pm) @ rotary(k, start=pn).transpose(-1, -2)).item()

    assert score(m, n) == pytest.approx(score(m + s, n + s), abs=1e-4)
    assert score(m, n) != pytest.approx(score(m + s, n), abs=1e-3)


def test_rotary_attention_weights_are_what_its_forward_applies():
    attn = RotaryAttention(32, 2, T, dropout=0.0)
    x = torch.randn(2, T, 32)
    w = attn.attention_weights(x)
    v = attn.queries_keys_values(x)[2]
    expected = attn.proj((w @ v).transpose(1, 2).reshape(2, T, 32))
    assert (attn(x) - expected).abs().max().item() < 1e-5
    assert torch.allclose(w.sum(-1), torch.ones(2, 2, T), atol=1e-5) and torch.all(w.triu(1) == 0)


def test_rope_model_is_causal_and_has_no_position_table():
    torch.manual_seed(0)
    model = RotaryGPT(30, T, 32, 2, 2).eval()
    assert not hasattr(model, "position_embedding")
    assert all(isinstance(b.sa, RotaryAttention) for b in model.blocks)
    assert not any("rotary" in k or "cos" in k for k in model.state_dict()), "the tables are rebuilt, not saved"
    idx = torch.randint(30, (2, T))
    idx2 = idx.clone()
    idx2[:, 11:] = torch.randint(30, (2, T - 11))
    a, b = model(idx)[0], model(idx2)[0]
    assert torch.allclose(a[:, :11], b[:, :11], atol=1e-6) and not torch.allclose(a[:, 11:], b[:, 11:])


def task09_model(**settings):
    """The model task 09 composes for these settings (a small one)."""
    import task09_rope

    cfg = ModernGPTConfig(block_size=T, n_embd=32, n_head=2, **settings)
    return task09_rope.build_model(cfg, 30)


def test_the_learned_arm_has_the_table_and_no_rotation():
    """positions="learned" is the A/B's other arm: task 07's table and task 07's attention."""
    assert POSITIONS == {"rope": RotaryGPT, "learned": GPT}
    model = task09_model(n_layer=2, positions="learned")
    assert type(model) is GPT
    assert model.position_embedding.weight.shape == (T, 32)
    assert not any(isinstance(b.sa, RotaryAttention) for b in model.blocks)
    rope = task09_model(n_layer=2)
    assert type(rope) is RotaryGPT
    assert set(model.state_dict()) - set(rope.state_dict()) == {"position_embedding.weight"}


def test_odd_head_size_and_unknown_choices_are_refused():
    with pytest.raises(UserError, match="must be even"):
        RotaryAttention(30, 2, T, 0.0)
    with pytest.raises(UserError, match="positions: unknown choice 'alibi'; choose one of rope, learned"):
        ModernGPTConfig(positions="alibi")
    with pytest.raises(UserError, match="mlp: unknown choice 'gelu'; choose one of relu, relu2, swiglu"):
        ModernGPTConfig(mlp="gelu")
    with pytest.raises(UserError, match="positions: unknown choice 'alibi'"):  # a config changed after it was made too
        dataclasses.replace(ModernGPTConfig(), positions="alibi")


@pytest.mark.parametrize("flags, message", [
    (["--positions", "alibi"], "argument --positions: unknown choice 'alibi'; choose one of rope, learned (got alibi)"),
    (["--mlp", "gelu"], "argument --mlp: unknown choice 'gelu'; choose one of relu, relu2, swiglu (got gelu)"),
])
def test_task09_refuses_unknown_choices_on_its_command_line(flags, message, capsys):
    import task09_rope

    with pytest.raises(SystemExit) as exit_info:
        task09_rope.main(flags)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_each_mlp_name_composes_its_class_into_every_block():
    assert MLPS == {"relu": MLP, "relu2": ReLUSquaredMLP, "swiglu": SwiGLU}
    for positions in ("rope", "learned"):
        for name, cls in MLPS.items():
            model = task09_model(n_layer=2, positions=positions, mlp=name)
            assert all(type(b.ffwd) is cls for b in model.blocks), (positions, name)
            assert model.args["mlp"] == cls.__name__


def test_mlp_variants_keep_the_shape_and_about_the_parameter_count():
    x = torch.randn(2, T, 48)
    relu, relu2, swiglu = MLP(48), ReLUSquaredMLP(48), SwiGLU(48)
    count = [sum(p.numel() for p in m.parameters()) for m in (relu, relu2, swiglu)]
    assert count[0] == count[1] and abs(count[2] - count[0]) / count[0] < 0.01
    for m in (relu2, swiglu):
        assert m(x).shape == x.shape
    relu2.net[0].weight.data.copy_(relu.net[0].weight.data)
    relu2.net[0].bias.data.copy_(relu.net[0].bias.data)
    relu2.net[2].load_state_dict(relu.net[2].state_dict())
    hidden = torch.relu(relu.net[0](x))
    assert torch.allclose(relu2(x), relu.net[2](hidden.square()), atol=1e-5)


def test_tied_weights_are_one_table():
    model = tie_weights(RotaryGPT(30, T, 32, 2, 1))
    assert model.lm_head.weight is model.token_embedding.weight
    assert model.args["tie_weights"] is True, "the checkpoint records it, to rebuild the model tied"
    assert sum(p.numel() for p in model.parameters()) == \
        sum(p.numel() for p in RotaryGPT(30, T, 32, 2, 1).parameters()) - 30 * 32
    composed = task09_model(n_layer=1, tie_weights=True)
    assert composed.lm_head.weight is composed.token_embedding.weight
    with pytest.raises(UserError, match="tie-weights"):
        task09_model(n_layer=1, tie_weights=True, positions="learned")


def test_orthogonalize_sets_the_singular_values_near_one():
    torch.manual_seed(0)
    for shape in ((32, 96), (96, 32)):
        g = torch.randn(*shape)  # singular values spread over a factor of about 4, as a gradient's
        assert torch.linalg.svdvals(g).max() / torch.linalg.svdvals(g).min() > 3
        s = torch.linalg.svdvals(orthogonalize(g))
        assert s.min() > 0.5 and s.max() < 1.25, (shape, s.min().item(), s.max().item())


def test_muon_takes_the_block_matrices_and_adamw_the_rest():
    model = RotaryGPT(30, T, 32, 2, 2)
    opt = muon_optimizer(model, 1e-3, 0.02, 0.0)
    muon, adamw = opt.optimizers
    assert isinstance(muon, Muon) and isinstance(adamw, torch.optim.AdamW)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in muon.param_groups[0]["params"]} == {
        n for n, p in model.named_parameters() if n.startswith("blocks.") and p.dim() == 2}
    assert muon.param_groups[0]["lr_scale"] == pytest.approx(20.0)
    x = torch.randint(30, (4, T))
    before = model.blocks[0].sa.qkv.weight.detach().clone()
    model(x, x)[1].backward()
    opt.step()
    assert not torch.equal(before, model.blocks[0].sa.qkv.weight)
    state = opt.state_dict()
    opt.load_state_dict(state)
    assert opt.state_dict()["optimizers"][0]["state"].keys() == state["optimizers"][0]["state"].keys()


def test_task09_compare_prints_the_ab_table_with_time_per_step(small_text_file, tmp_path, capsys):
    import task09_rope

    ckpt = tmp_path / "t9.pt"
    ckpt.write_bytes(b"a model someone cares about")
    results = task09_rope.main(["--compare", "positions=learned", "--seeds", "2", "--data", str(small_text_file),
                                "--max-iters", "4", "--eval-interval", "2", "--eval-iters", "1",
                                "--final-eval-iters", "1", "--n-embd", "16", "--n-head", "2", "--n-layer", "1",
                                "--block-size", "16", "--batch-size", "2", "--device", "cpu",
                                "--checkpoint", str(ckpt)])
    out = capsys.readouterr().out
    assert len(results["A"]) == len(results["B"]) == 2
    assert "=== arm B (positions=learned), seed 1338 ===" in out
    assert "| seed | A: positions=rope | B: positions=learned | B - A | ms/step A | ms/step B |" in out
    assert "| mean ± std |" in out and "A/B at 4 steps" in out
    assert ckpt.read_bytes() == b"a model someone cares about", "an A/B saves nothing"


def test_task09_offers_the_flags_its_messages_name(small_text_file, tmp_path, capsys):
    """A second run refuses to replace the saved model, and the flags it suggests are the script's own."""
    import task09_rope

    args = ["--data", str(small_text_file), "--max-iters", "2", "--eval-interval", "1", "--eval-iters", "1",
            "--final-eval-iters", "1", "--n-embd", "16", "--n-head", "2", "--n-layer", "1", "--block-size", "16",
            "--batch-size", "2", "--device", "cpu", "--runs", "", "--checkpoint", str(tmp_path / "t9.pt")]
    task09_rope.main(args)
    with pytest.raises(SystemExit) as exit_info:
        task09_rope.main(args)
    assert exit_info.value.code == 2
    assert "--resume" in capsys.readouterr().err
    assert task09_rope.main(args + ["--resume", "--max-iters", "3"])["history"][-1]["iter"] == 3
    assert task09_rope.main(args + ["--overwrite"])["history"][-1]["iter"] == 2


def test_a_bad_compare_setting_is_refused(capsys):
    import task09_rope

    for value, message in (("positons=learned", "give SETTING=VALUE with a setting of this script"),
                           ("n_layer=two", "n_layer takes a int (got two)")):
        with pytest.raises(SystemExit) as exit_info:
            task09_rope.main(["--compare", value])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
