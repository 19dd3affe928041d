import json

import pytest
import torch

from gpt.model import GPT, AttentionHead, LanguageModel
from gpt.modern import RotaryGPT
from course.plots import attention_maps, attention_modules, plot_attention, plot_loss, plot_loss_by_position
from course.run_files import RunFiles, read_history

PNG = b"\x89PNG\r\n\x1a\n"
V = 30


def test_loss_curve_is_a_png_without_a_display(tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    history = [{"iter": i, "train": 4 - i / 1000, "val": 4.1 - i / 1000} for i in range(0, 2001, 500)]
    plot_loss(history, tmp_path / "loss.png", "task05", course=(1500, 2.5), band={"mean": 2.1, "std": 0.01, "seeds": 3})
    assert (tmp_path / "loss.png").read_bytes()[:8] == PNG


def test_loss_by_position_draws_each_models_curve_and_shades_its_seed_spread(tmp_path):
    gpt, gru = [3.0, 2.0, 1.6, 1.5], [3.0, 2.1, 1.8, 1.75]
    fig = plot_loss_by_position({"GPT": (gpt, [0.1] * 4), "GRU": (gru, None)}, tmp_path / "p.png", "by position")
    ax, diff = fig.axes
    assert [line.get_label() for line in ax.lines] == ["GPT", "GRU"]
    assert list(ax.lines[1].get_ydata()) == gru
    assert len(ax.collections) == 1, "one shaded band: the GPT's spread over seeds, none for one seed"
    assert [line.get_label() for line in diff.lines] == ["GPT", "GRU − GPT"]
    assert list(diff.lines[1].get_ydata()) == pytest.approx([g - p for g, p in zip(gru, gpt)])
    assert (tmp_path / "p.png").read_bytes()[:8] == PNG


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
    v = sa.queries_keys_values(x)[2][0]  # (nh, T, hs)
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
    model = RotaryGPT(V, 16, 32, 2, 3).eval()
    assert [name for name, _ in attention_modules(model)] == ["blocks.0.sa", "blocks.1.sa", "blocks.2.sa"]
    maps = attention_maps(model, torch.randint(V, (1, 10)))
    plot_attention(maps, list("abcdefghi\n"), tmp_path / "a.png", "test")
    data = (tmp_path / "a.png").read_bytes()
    assert data[:8] == PNG
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert height > width, "3 layers (rows) of 2 heads (columns)"


def test_report_makes_bands_and_the_table_from_the_runs(tmp_path, monkeypatch):
    import course.report as report

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


def drawn(fig):
    """A renderer for a figure already saved and closed, to measure where its texts landed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def test_a_short_runs_loss_plot_keeps_to_its_steps_and_its_legend_covers_nothing(tmp_path):
    """A 400-step run of task 07: no axis stretched to the course's epoch 4999; the legend under the panels."""
    history = [{"iter": i, "train": 4.2 - i / 200, "val": 4.25 - i / 200} for i in (0, 200, 400)]
    fig = plot_loss(history, tmp_path / "loss.png", "task07", course=(4999, 1.4894),
                    band={"mean": 1.5324, "std": 0.0121, "seeds": 3}, course_note="on a GPU")
    whole, enlarged = fig.axes
    assert whole.get_xlim()[1] < 450 and enlarged.get_xlim()[0] > 150 and enlarged.get_xlim()[1] < 450
    assert whole.get_ylim()[0] < 1.4894, "the course's number is still shown, as a line"
    renderer = drawn(fig)
    legend = fig.legends[0].get_window_extent(renderer)
    for ax in fig.axes:
        assert not ax.get_tightbbox(renderer).overlaps(legend), "the legend covers no panel, tick or label"
    assert any("after this run's last step" in t.get_text() for t in fig.legends[0].get_texts())


def test_attention_labels_are_large_enough_to_read_and_the_title_is_whole(tmp_path):
    """Task 07's picture (4 layers of 4 heads over 40 characters) about a screen wide, its characters at
    least 9 px tall and never overlapping; a one-head picture's title inside the figure."""
    torch.manual_seed(0)
    tokens = list("BAPTISTA:\nGood morrow, neighbour Gremio.")
    maps = attention_maps(GPT(V, 64, 32, 4, 4).eval(), torch.randint(V, (1, len(tokens))))
    fig = plot_attention(maps, tokens, tmp_path / "a.png", "task07: attention of the trained model")
    data = (tmp_path / "a.png").read_bytes()
    assert int.from_bytes(data[16:20], "big") <= 1600, "about a screen wide: shown without shrinking"
    dpi = 100  # plot_attention saves at 100 dpi
    bottom = fig.axes[-1].get_xticklabels()
    left = fig.axes[0].get_yticklabels()
    assert [t.get_text() for t in bottom][9:11] == ["↵", "G"] and left[10].get_text() == "G"
    assert min(t.get_fontsize() for t in left) * dpi / 72 >= 9
    assert min(t.get_fontsize() for t in bottom) * dpi / 72 >= 12
    renderer = drawn(fig)
    boxes = [t.get_window_extent(renderer) for t in bottom]
    assert not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:])), "neighbouring characters apart"

    (one,) = attention_maps(LanguageModel(V, 8, 16, AttentionHead(16, 16)).eval(), torch.randint(V, (1, len(tokens))))
    fig = plot_attention([one], tokens, tmp_path / "b.png", "task01: attention of the trained model")
    renderer = drawn(fig)
    (title,), page = [t.get_window_extent(renderer) for t in fig.texts], fig.bbox  # the suptitle
    assert page.x0 <= title.x0 and title.x1 <= page.x1 and title.y1 <= page.y1, "the title is not clipped"


def test_the_course_figures_legend_labels_are_whole(tmp_path, monkeypatch):
    import course.report as report

    monkeypatch.setattr(report, "RUNS", tmp_path)
    for task in ("task00", "task06"):
        run = tmp_path / "1337" / task
        run.mkdir(parents=True)
        (run / "history.csv").write_text("step,train_loss,val_loss,seconds,eval_batches\n0,4.2,4.2,0.1,200\n"
                                         "4999,2.0,2.1,40,200\n")
        (run / "summary.json").write_text(json.dumps({"parameters": 1000}))
        (run / "wall.json").write_text(json.dumps({"wall_seconds": 40.0}))
    runs = report.collect(report.TASKS)
    fig = report.draw(runs, report.make_bands(runs), tmp_path / "course.png")
    labels = [t.get_text().replace("\n", " ") for t in fig.legends[0].get_texts()]
    assert labels[:2] == [f"{task}: {report.what_it_adds(task)}" for task in ("task00", "task06")]
    assert labels[3] == "ours: final val, mean ± std over 1 seed"
    renderer = drawn(fig)
    legend = fig.legends[0].get_window_extent(renderer)
    assert fig.bbox.x0 <= legend.x0 and legend.x1 <= fig.bbox.x1 and fig.bbox.y0 <= legend.y0
    assert not fig.axes[0].get_tightbbox(renderer).overlaps(legend)


def test_history_csv_reads_back_the_evaluations_the_run_wrote(tmp_path):
    files = RunFiles(str(tmp_path), "task07", log=lambda *lines: None)
    files.write_history([{"iter": 0, "train": 4.2211, "val": 4.2217, "time": 1.2, "eval_iters": 40},
                         {"iter": 1000, "train": 1.803, "val": 1.9294, "time": 64.6, "eval_iters": 40}])
    assert read_history(tmp_path / "task07" / "history.csv") == [
        {"step": 0, "train": 4.2211, "val": 4.2217}, {"step": 1000, "train": 1.803, "val": 1.9294}]
