"""The loss by position, smooth (the explorer's item 6): `python -m course.measures positions` measures
it for several checkpoints and redraws compare_rnn.py's figure from them."""

import pytest
import torch

from course.checkpoint import model_payload, save_checkpoint
from course.measures import main
from course.plots import plot_loss_by_position
from gpt.data import load_dataset
from gpt.model import GPT
from gpt.rnn import RNNLanguageModel

PNG = b"\x89PNG\r\n\x1a\n"


def saved(path, model, tokenizer, seed=1337):
    save_checkpoint(path, {**model_payload(model), "tokenizer": tokenizer.to_dict(), "config": {"seed": seed}})
    return str(path)


def test_the_figure_is_redrawn_from_saved_checkpoints(tmp_path, corpus_text, capsys):
    """A GPT and a GRU, as compare_rnn.py saves them: a table per checkpoint, and the figure."""
    tokenizer = load_dataset().tokenizer
    V = tokenizer.vocab_size
    torch.manual_seed(0)
    paths = [saved(tmp_path / "gpt.pt", GPT(V, 8, 16, 2, 1), tokenizer),
             saved(tmp_path / "gru.pt", RNNLanguageModel(V, 8, 16, 16, 1, cell="gru"), tokenizer)]
    figure = tmp_path / "figure.png"
    assert main(["positions", "--checkpoint", *paths, "--every", "16", "--figure", str(figure), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.count(" by position (tokens of context)") == 2 and f"{paths[1]}:\n" in out
    assert "runs of 32 window starts, one in every 16 (6,976 windows)" in out, out
    assert figure.read_bytes()[:8] == PNG and f"loss by position: {figure}" in out


def test_the_difference_is_drawn_over_the_positions_both_models_have(tmp_path):
    short, long = [3.0, 2.0, 1.6, 1.5], [2.9, 2.1, 1.7, 1.4, 1.3, 1.3, 1.2, 1.2]
    fig = plot_loss_by_position({"GPT": (short, None), "RoPE": (long, None)}, tmp_path / "p.png", "windows of 4 and 8")
    ax, diff = fig.axes
    assert [len(line.get_xdata()) for line in ax.lines] == [4, 8]
    assert list(diff.lines[1].get_ydata()) == pytest.approx([-0.1, 0.1, 0.1, -0.1])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2", "4", "7"]


def test_figure_is_for_positions_only(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["speed", "--figure", "x.png"])
    assert stopped.value.code == 2 and "--figure draws the loss by position" in capsys.readouterr().err
