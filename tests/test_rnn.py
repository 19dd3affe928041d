import itertools

import pytest
import torch

from course.checkpoint import build_saved_model, model_payload
from gpt.generate import stream
from gpt.model import GPT, count_parameters
from course.presets import TASK07
from gpt.rnn import (RecurrentState, RNNLanguageModel, StatefulTraining, count_rnn_parameters, hidden_size_for,
                     loss_as_one_stream)
from gpt.train import TrainingState

import compare_rnn
import course.measures
import task08_infinite

V = 20
CELLS = ["gru", "lstm"]


def small_rnn(cell, seed=0, **kw):
    torch.manual_seed(seed)
    return RNNLanguageModel(V, 16, 12, 24, 2, cell=cell, **kw).eval()


def random_state(cell, batch=1):
    h = torch.randn(2, batch, 24)
    return RecurrentState((h, torch.randn(2, batch, 24)) if cell == "lstm" else h)


@pytest.mark.parametrize("cell", CELLS)
def test_changing_later_tokens_changes_no_earlier_logits(cell):
    model = small_rnn(cell)
    idx = torch.randint(V, (2, 16))
    changed = idx.clone()
    changed[:, 9:] = (changed[:, 9:] + 1) % V
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(changed)
    assert torch.equal(a[:, :9], b[:, :9]), "a later token changed an earlier position's logits"
    assert not torch.allclose(a[:, 9:], b[:, 9:]), "the changed tokens changed nothing: the test would prove nothing"


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("start", ["zeros", "a state"])
def test_a_stream_equals_a_full_forward_over_the_same_characters_from_the_same_state(cell, start):
    model = small_rnn(cell)
    text = torch.randint(V, (40,)).tolist()  # longer than block_size: the state has no window to fill
    state = random_state(cell) if start == "a state" else RecurrentState()  # task 08's stream starts from zeros
    with torch.no_grad():
        full, _ = model(torch.tensor([text]), cache=RecurrentState(state.hidden))  # (1, 40, V)
    seen, feed = [], iter(text[3:])

    def pick(logits):  # keep the logits the stream computed, and feed the text's own next token
        seen.append(logits[0])
        return next(feed)

    if start == "a state":
        model.new_cache = lambda batch=1: RecurrentState(state.hidden)  # the stream starts from that state
    list(itertools.islice(stream(model, text[:3], pick), len(text) - 3))
    streamed = torch.stack(seen)  # the logits after each of text[2:-1]
    assert torch.allclose(streamed, full[0, 2:-1], atol=1e-5), (streamed - full[0, 2:-1]).abs().max()


@pytest.mark.parametrize("cell", CELLS)
def test_the_rnn_has_the_parameters_of_task_07s_gpt_within_5_percent(cell):
    cfg = TASK07["cpu"]
    gpt = count_parameters(GPT(65, cfg.block_size, cfg.n_embd, cfg.n_head, cfg.n_layer))
    rnn = compare_rnn.build_rnn(cfg, 65, cell, n_layer=2)
    assert abs(count_parameters(rnn) - gpt) / gpt < 0.05, (count_parameters(rnn), gpt)
    assert count_parameters(rnn) == count_rnn_parameters(cell, 65, cfg.n_embd, rnn.args["n_hidden"], 2)


def test_the_hidden_size_chosen_is_the_closest_in_parameters():
    target = 100_000
    h = hidden_size_for(target, "gru", V, 16, 2)
    sizes = {n: abs(count_rnn_parameters("gru", V, 16, n, 2) - target) for n in (h - 1, h, h + 1)}
    assert min(sizes, key=sizes.get) == h, sizes


@pytest.mark.parametrize("cell", CELLS)
def test_a_checkpoint_rebuilds_the_same_rnn(cell):
    model = small_rnn(cell, seed=3)
    payload = model_payload(model)
    again = build_saved_model(payload["model_class"], payload["model_args"])
    again.load_state_dict(payload["model"])
    idx = torch.randint(V, (1, 10))
    with torch.no_grad():
        assert torch.equal(model(idx)[0], again.eval()(idx)[0])


def test_stateful_training_continues_each_row_where_the_step_before_ended_and_detaches_the_state():
    model = small_rnn("gru").train()
    text = torch.arange(1000) % V
    carrier = StatefulTraining(model, text, batch_size=4, block_size=16)
    state = TrainingState(0)
    x0, y0 = carrier.batches(state)
    state.iter = 1
    x1, _ = carrier.batches(state)
    assert torch.equal(x1[:, 0], y0[:, -1]), "row b of a step must continue row b of the step before"
    assert torch.equal(y0[:, :-1], x0[:, 1:])
    _, loss = carrier.train()(x0, y0)
    assert carrier.carried.hidden is not None and not carrier.carried.hidden.requires_grad
    carried = carrier.carried.hidden.clone()
    _, from_carried = carrier(x1, x1)
    _, from_zero = model(x1, x1)
    assert not torch.isclose(from_carried, from_zero), "the second step did not start from the state the first left"
    assert not torch.equal(carried, carrier.carried.hidden)
    carrier.eval()
    with torch.no_grad():
        assert torch.equal(carrier(x1, x1)[1], model(x1, x1)[1]), "evaluation must start every window from zero"
    state.iter = carrier.steps_per_pass  # a new pass over the text starts from zeros again
    carrier.batches(state)
    assert carrier.carried.hidden is None


@pytest.mark.parametrize("cell", CELLS)
def test_one_stream_loss_is_the_sum_over_every_character_from_everything_before_it(cell):
    model = small_rnn(cell)
    ids = torch.randint(V, (50,))
    with torch.no_grad():
        logits, _ = model(ids[None, :-1])
        expected = torch.nn.functional.cross_entropy(logits[0], ids[1:], reduction="sum").item()
    assert loss_as_one_stream(model, ids, chunk=7) == pytest.approx(expected, rel=1e-5)


SHORT = ["--max-iters", "12", "--eval-interval", "6", "--eval-iters", "2", "--final-eval-iters", "2",
         "--sample-tokens", "20", "--gen-chars", "30", "--cell", "gru"]


@pytest.mark.slow  # a process or more started per test: seconds each
def test_a_short_comparison_prints_the_table_with_its_rows_and_saves_a_model_task08_streams(
        tmp_path, small_text_file, capsys):
    ckpts, runs = tmp_path / "ckpt", tmp_path / "runs"
    argv = SHORT + ["--data", str(small_text_file), "--checkpoints", str(ckpts), "--runs", str(runs),
                    "--figure", str(tmp_path / "positions.png"), "--stateful", "--equal-time"]
    results = compare_rnn.main(argv)
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| model | parameters | steps | final train | final val | val perplexity | val bits/char")
    assert [row.split(" | ")[0] for row in table[1:]] == [
        "| GPT (task 07)", "| GRU", "| GRU, state carried", "| GRU, the GPT's time"]
    gru = results[0]["gru"]
    assert gru["steps"] == 12 and f"{gru['val']:.4f}" in table[2]
    assert "Epoch 12: avg train loss" in out and "(final: 2 batches per split, after the last step)" in out
    assert (tmp_path / "positions.png").stat().st_size > 0 and (runs / "compare_rnn" / "results.json").is_file()
    assert sorted(p.name for p in ckpts.iterdir()) == ["gpt.pt", "gru-equal-time.pt", "gru-stateful.pt", "gru.pt"]
    assert task08_infinite.main(["--checkpoint", str(ckpts / "gru.pt"), "--max-new-tokens", "200"]) == 0
    streamed = capsys.readouterr().out
    assert len(streamed) == 1 + 200 + 1  # the prompt, 200 characters, a newline


@pytest.mark.parametrize("flags, message", [
    (["--cell", "rnn"], "argument --cell: invalid choice: 'rnn'"),
    (["--seeds", "0"], "argument --seeds: must be at least 1 (got 0)"),
    (["--checkpoint", "x.pt"], "--checkpoints DIR, not --checkpoint"),
    (["--stateful", "--grad-accum", "2"], "leave --grad-accum at 1"),
    (["--no-gpt", "--equal-time"], "it needs the GPT's row"),
])
def test_bad_flags_get_a_message_and_no_training(flags, message, monkeypatch, capsys):
    monkeypatch.setattr(compare_rnn, "train_seed", lambda *a, **k: pytest.fail("trained despite a bad flag"))
    with pytest.raises(SystemExit) as exit_info:
        compare_rnn.main(flags)
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


def test_an_earlier_comparisons_models_are_not_replaced_without_overwrite(tmp_path, monkeypatch, capsys):
    (tmp_path / "gru.pt").write_bytes(b"a model")
    monkeypatch.setattr(compare_rnn, "train_seed", lambda *a, **k: pytest.fail("trained over a saved model"))
    with pytest.raises(SystemExit) as exit_info:
        compare_rnn.main(["--cell", "gru", "--checkpoints", str(tmp_path)])
    assert exit_info.value.code != 0
    assert "already holds a model" in capsys.readouterr().err
    assert (tmp_path / "gru.pt").read_bytes() == b"a model"


def test_stateful_training_refuses_a_text_too_short_for_its_streams(small_text_file, monkeypatch, capsys):
    monkeypatch.setattr(compare_rnn, "train_seed", lambda *a, **k: pytest.fail("trained despite a text too short"))
    with pytest.raises(SystemExit) as exit_info:
        compare_rnn.main(["--data", str(small_text_file), "--stateful", "--batch-size", "200", "--checkpoints", ""])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert "--stateful cuts the training text into --batch-size 200 streams" in err and "Traceback" not in err, err


def test_stream_speed_times_the_first_and_the_last_characters_apart(monkeypatch):
    """A clock that makes each of the first 100 characters take 1 s and each later one 4 s."""
    clock = iter(range(10**6))

    def fake_clock():  # the n-th reading: the start, then one after each character
        n = next(clock)
        return float(n if n <= 100 else 100 + 4 * (n - 100))

    monkeypatch.setattr(course.measures.time, "perf_counter", fake_clock)
    speed = course.measures.stream_speed(small_rnn("gru"), n_chars=300, edge=50)
    assert speed["first"] == pytest.approx(1.0) and speed["last"] == pytest.approx(0.25)
    assert speed["all"] == pytest.approx(300 / (100 + 4 * 200))
