import json

import torch

from gpt.model import GPT, AttentionHead, LanguageModel
from gpt.modern import ModernGPT
from gpt.plots import attention_maps, attention_modules, plot_attention, plot_loss

PNG = b"\x89PNG\r\n\x1a\n"
V = 30


def test_loss_curve_is_a_png_without_a_display(tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    history = [{"iter": i, "train": 4 - i / 1000, "val": 4.1 - i / 1000} for i in range(0, 2001, 500)]
    plot_loss(history, tmp_path / "loss.png", "task05", course=(1500, 2.5), band={"mean": 2.1, "std": 0.01, "seeds": 3})
    assert (tmp_path / "loss.png").read_bytes()[:8] == PNG


def test_attention_maps_are_the_weights_the_model_applies():
    """Each map row sums to 1, nothing above the diagonal, and weights @ values give each layer's output."""
    torch.manual_seed(0)
    model = GPT(V, 16, 32, 4, 2).eval()
    idx = torch.randint(V, (1, 12))
    maps = attention_maps(model, idx)
    assert len(maps) == 2 and maps[0].shape == (4, 12, 12)
    inputs = []
    hook = model.blocks[1].sa.register_forward_hook(lambda m, args, out: inputs.append((args[0], out)))
    with torch.no_grad():
        model(idx)
    hook.remove()
    x, out = inputs[0]
    sa = model.blocks[1].sa
    v = sa.heads(x)[2][0]  # (nh, T, hs)
    mixed = (maps[1] @ v).transpose(0, 1).reshape(12, 32)
    assert (sa.proj(mixed) - out[0]).abs().max().item() < 1e-5
    for m in maps:
        assert torch.allclose(m.sum(-1), torch.ones(4, 12), atol=1e-5) and torch.all(m.triu(1) == 0)


def test_a_text_longer_than_block_size_is_read_in_sliding_windows():
    """Task 01 to 06 models see 8 characters: row t covers the 8 tokens up to t, as when t is the newest."""
    torch.manual_seed(0)
    model = LanguageModel(V, 8, 16, AttentionHead(16, 16)).eval()
    idx = torch.randint(V, (1, 20))
    (m,) = attention_maps(model, idx)
    assert m.shape == (1, 20, 20)
    assert torch.allclose(m.sum(-1), torch.ones(1, 20), atol=1e-5)
    assert torch.all(m.triu(1) == 0) and torch.all(m.tril(-8) == 0), "nothing read further back than block_size"
    with torch.no_grad():
        x = model.token_embedding(idx[:, 5:13]) + model.position_embedding(torch.arange(8))
        window = model.body.attention_weights(x)[0, 0, -1]
    assert torch.allclose(m[0, 12, 5:13], window, atol=1e-6)


def test_attention_figure_has_a_panel_per_layer_and_head(tmp_path):
    torch.manual_seed(0)
    model = ModernGPT(V, 16, 32, 2, 3).eval()
    assert [name for name, _ in attention_modules(model)] == ["blocks.0.sa", "blocks.1.sa", "blocks.2.sa"]
    maps = attention_maps(model, torch.randint(V, (1, 10)))
    plot_attention(maps, list("abcdefghi\n"), tmp_path / "a.png", "test")
    data = (tmp_path / "a.png").read_bytes()
    assert data[:8] == PNG
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert height > width, "3 layers (rows) of 2 heads (columns)"


def test_report_makes_bands_and_the_table_from_the_runs(tmp_path, monkeypatch):
    import gpt.report as report

    monkeypatch.setattr(report, "RUNS", tmp_path)
    for seed, at_4500, final in ((1337, 2.10, 2.05), (1338, 2.12, 2.07), (1339, 2.11, 2.06)):
        run = tmp_path / str(seed) / "task05"
        run.mkdir(parents=True)
        (run / "history.csv").write_text("step,train_loss,val_loss,seconds,eval_batches\n0,4.2,4.2,0.1,200\n"
                                         f"4500,1.95,{at_4500},36,200\n4999,1.9,{final},40,200\n")
        (run / "summary.json").write_text(json.dumps({"parameters": 41921}))
        (run / "wall.json").write_text(json.dumps({"wall_seconds": 40.0 + seed - 1337}))
    runs = report.collect(report.TASKS)
    bands = report.make_bands(runs)
    assert bands["task05"]["mean"] == 2.06 and bands["task05"]["std"] == 0.01 and bands["task05"]["wall_mean"] == 41.0
    assert bands["task05"]["at_course_epoch"] == {"mean": 2.11, "std": 0.01}, "the course printed task 05 at epoch 4500"
    table = report.table(bands, runs)
    assert "| `task05.py` | skip connections, an attention output projection, and a 4x wider MLP | " \
           "2.0771 (4500) | 2.1100 ± 0.0100 | 2.0600 ± 0.0100 (4999) | 41,921 | 41 s |" in table
    report.draw(runs, bands, tmp_path / "course.png")
    assert (tmp_path / "course.png").read_bytes()[:8] == PNG
