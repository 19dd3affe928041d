"""What a first run leaves behind: nothing committed lost, no run's files replaced without a word,
no replacement characters from a BPE model, and the commands saying what they are called."""

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import task01
import task07
import task08_infinite
from conftest import ROOT, SMALL_TEXT
from course import plots
from course.checkpoint import model_payload, save_checkpoint
from course.config import GPTConfig
from gpt.model import GPT
from course.reference import COURSE
from course.exits import friendly_errors
from gpt.tokenizer import CharTokenizer

PNG = b"\x89PNG\r\n\x1a\n"
TINY = ["--max-iters", "12", "--eval-interval", "5", "--eval-iters", "2", "--sample-tokens", "40", "--device", "cpu"]
TINY07 = ["--preset", "cpu", "--block-size", "16", "--n-embd", "16", "--n-head", "2", "--n-layer", "1",
          "--batch-size", "4", "--max-iters", "4", "--eval-interval", "2", "--eval-iters", "1",
          "--final-eval-iters", "1", "--sample-tokens", "300", "--device", "cpu"]
BPE = ["--tokenizer", "bpe", "--vocab-size", "60"]


REFERENCE = "x86 CPU, AVX2 kernels, fp32"  # where the committed bands were measured


def fake_seed_runs(runs: Path, task: str, finals: dict, where: str = REFERENCE) -> None:
    """What `python -m course.report --train` leaves for one task: a history, a summary and a wall time per seed."""
    for seed, final in finals.items():
        run = runs / str(seed) / task
        run.mkdir(parents=True, exist_ok=True)
        (run / "history.csv").write_text("step,train_loss,val_loss,seconds,eval_batches\n0,4.2,4.2,0.1,200\n"
                                         f"4999,{final - 0.05},{final},7,200\n")
        (run / "summary.json").write_text(json.dumps({"parameters": 4225, "hardware": where}))
        (run / "wall.json").write_text(json.dumps({"wall_seconds": 7.0}))


def test_a_partial_report_keeps_every_other_tasks_band_and_the_committed_figure(tmp_path, monkeypatch, capsys):
    import course.report as report

    committed = json.loads((ROOT / "assets" / "bands.json").read_text())
    assert list(committed) == [REFERENCE] and len(committed[REFERENCE]) == len(report.TASKS), \
        "the committed reference holds every task's band, measured on an x86 CPU"
    bands, figure = tmp_path / "bands.json", tmp_path / "course.png"
    shutil.copy(ROOT / "assets" / "bands.json", bands)
    figure.write_bytes(b"the committed figure")
    monkeypatch.setattr(report, "RUNS", tmp_path / "seeds")
    monkeypatch.setattr(report, "BANDS", bands)
    monkeypatch.setattr(report, "FIGURE", figure)
    finals = {1337: 2.50, 1338: 2.52, 1339: 2.54}
    monkeypatch.setattr(report, "train", lambda tasks, seeds: [fake_seed_runs(tmp_path / "seeds", task, {
        s: finals[s] for s in seeds}) for task in tasks])

    assert report.main(["--train", "--tasks", "task00", "--seeds", "1337"]) == 0
    assert json.loads(bands.read_text()) == committed, "one seed does not stand in for the reference's three"
    assert figure.read_bytes() == b"the committed figure"
    assert (tmp_path / "seeds" / "course.png").read_bytes()[:8] == PNG, "the partial figure is drawn under runs/"
    assert "kept the reference" in capsys.readouterr().out

    assert report.main(["--train", "--tasks", "task00", "--seeds", "1337", "1338", "1339"]) == 0
    after = json.loads(bands.read_text())[REFERENCE]
    mine = committed[REFERENCE]
    assert after["task00"]["finals"] == {"1337": 2.5, "1338": 2.52, "1339": 2.54} and after["task00"]["seeds"] == 3
    assert {t: b for t, b in after.items() if t != "task00"} == {t: b for t, b in mine.items() if t != "task00"}
    assert list(after) == list(mine), "in the course's order"
    assert figure.read_bytes() == b"the committed figure", "only task00 was measured"


def test_a_report_on_other_hardware_writes_its_own_bands_and_keeps_the_x86_ones(tmp_path, monkeypatch, capsys):
    """A full report on a GPU (or a Mac, or an ARM CPU) over 3 seeds: its bands go beside the committed
    x86 CPU ones, which stay as they were, and the committed figure is not redrawn."""
    import course.report as report

    committed = json.loads((ROOT / "assets" / "bands.json").read_text())
    bands, figure = tmp_path / "bands.json", tmp_path / "course.png"
    shutil.copy(ROOT / "assets" / "bands.json", bands)
    figure.write_bytes(b"the committed figure")
    for name, value in (("RUNS", tmp_path / "seeds"), ("BANDS", bands), ("FIGURE", figure)):
        monkeypatch.setattr(report, name, value)
    monkeypatch.setattr(report, "train", lambda tasks, seeds: [fake_seed_runs(
        tmp_path / "seeds", task, {s: 2.0 + s / 1e5 for s in seeds}, "cuda, bf16") for task in report.TASKS])
    assert report.main(["--train"]) == 0
    after = json.loads(bands.read_text())
    assert after[REFERENCE] == committed[REFERENCE], "the x86 CPU bands are never replaced from other hardware"
    assert set(after["cuda, bf16"]) == set(report.TASKS) and after["cuda, bf16"]["task00"]["seeds"] == 3
    assert figure.read_bytes() == b"the committed figure"
    assert f"the committed {REFERENCE} bands as they were" in capsys.readouterr().out


def test_the_report_trains_task07s_cpu_preset_on_any_hardware():
    import course.report as report

    cmd = report.command("task07", 1337)
    assert cmd[cmd.index("--preset") + 1] == "cpu" and "--preset" not in report.command("task05", 1337)


def test_a_bpe_run_writes_beside_the_character_run_not_over_it(tmp_path, small_text_file, capsys):
    runs = tmp_path / "runs"
    common = TINY07 + ["--data", str(small_text_file), "--runs", str(runs), "--checkpoint", ""]
    task07.main(common)
    char_history = (runs / "task07" / "history.csv").read_text()
    task07.main(common + BPE)
    out = capsys.readouterr().out
    assert (runs / "task07" / "history.csv").read_text() == char_history
    assert json.loads((runs / "task07-bpe" / "summary.json").read_text())["config"]["tokenizer"] == "bpe"
    assert f"run files: {runs / 'task07-bpe' / 'history.csv'}" in out
    assert "another run's files" not in out


def test_a_run_that_replaces_another_runs_files_says_so_and_a_resumed_run_does_not(run_log, tmp_path, small_text_file):
    cfg = GPTConfig(data=str(small_text_file), block_size=16, n_embd=16, n_head=2, n_layer=1, batch_size=4,
                    max_iters=8, eval_interval=2, eval_iters=1, final_eval_iters=1, device="cpu", sample_tokens=0,
                    runs=str(tmp_path / "runs"), checkpoint=str(tmp_path / "task07.pt"))
    notice = f"note: {tmp_path / 'runs' / 'task07'} holds another run's files; this run replaces them"

    def stop_at_4(line):
        assert notice not in line, "the first run replaces nothing"
        if line.startswith("Epoch 4:"):
            raise KeyboardInterrupt

    with pytest.raises(SystemExit), friendly_errors(checkpoint=cfg.checkpoint):  # as task07.main runs it
        run_log(stop_at_4)
        task07.train_gpt(cfg)
    resumed = []
    run_log(resumed.append)
    task07.train_gpt(cfg, resume=True)
    assert not any(notice in line for line in resumed), "a resumed run carries on its own files"
    with open(tmp_path / "runs" / "task07" / "history.csv", newline="") as f:
        assert [r["step"] for r in csv.DictReader(f)][:3] == ["0", "2", "4"]
    again = []
    run_log(again.append)
    task07.train_gpt(cfg, overwrite=True)
    assert sum(notice in line for line in again) == 1, again


def test_a_short_bpe_run_samples_and_streams_no_replacement_character(tmp_path, small_text_file):
    checkpoint = tmp_path / "bpe.pt"
    result = task07.main(TINY07 + BPE + ["--data", str(small_text_file), "--runs", "", "--checkpoint", str(checkpoint)])
    assert result["tokenizer"].alphabet == set(SMALL_TEXT.encode()), "the alphabet: the bytes the text holds"
    assert "\ufffd" not in result["sample"]
    out = io.StringIO()
    assert task08_infinite.main(["--checkpoint", str(checkpoint), "--max-new-tokens", "1500", "--device", "cpu"],
                                out=out) == 0
    stream = out.getvalue()
    assert len(stream) > 1500 and "\ufffd" not in stream


def test_the_default_text_is_found_from_another_working_folder(tmp_path, monkeypatch, capsys):
    """--data's default, data/input.txt, is the repository's Tiny Shakespeare wherever the script is run
    from (not a data/input.txt under the working folder, which would be downloaded)."""
    monkeypatch.chdir(tmp_path)
    result = task01.main(["--max-iters", "1", "--eval-interval", "1", "--eval-iters", "1", "--runs", "",
                          "--sample-tokens", "5"])
    assert result["tokenizer"].vocab_size == 65 and "Epoch 0: avg train loss" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == [], "nothing was downloaded or written into the working folder"


def test_a_bpe_tokenizer_saved_with_all_256_bytes_still_loads_and_encodes_any_text():
    """A checkpoint from before the alphabet was the text's bytes: GPT-2's 256-byte alphabet."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from gpt.tokenizer import tokenizer_from_dict

    old = Tokenizer(models.BPE())
    old.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    old.decoder = decoders.ByteLevel()
    old.train_from_iterator([SMALL_TEXT], trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    loaded = tokenizer_from_dict({"kind": "bpe", "json": old.to_str()})
    assert len(loaded.alphabet) == 256 and loaded.vocab_size == 300
    text = "Zoë's naïve café — 東京\n"
    assert loaded.decode(loaded.encode(text)) == text


def test_a_bpe_tokenizer_names_the_characters_its_text_never_had():
    from gpt.errors import UserError
    from gpt.tokenizer import BPETokenizer

    bpe = BPETokenizer.train(SMALL_TEXT, 60)
    with pytest.raises(UserError, match=r"2 character\(s\) outside the vocabulary: 'Z', 'é'"):
        bpe.encode("Zoé")


def test_another_text_draws_no_reference_and_says_why_it_has_no_attention_picture(tmp_path, small_text_file,
                                                                                   monkeypatch, capsys):
    drawn = []
    plot_loss = plots.plot_loss
    monkeypatch.setattr(plots, "plot_loss", lambda history, path, title, course=None, band=None, note="", where="": (
        drawn.append((course, band)), plot_loss(history, path, title, course, band, note, where)))
    task01.main(TINY + ["--data", str(small_text_file), "--runs", str(tmp_path / "mine")])
    out = capsys.readouterr().out
    assert drawn == [(None, None)], "Tiny Shakespeare's band and the course's star are not this text's"
    assert "no attention picture: the line it reads" in out and "lacks ('G', 'I', 'P'" in out
    assert not (tmp_path / "mine" / "task01" / "attention.png").exists()
    task01.main(TINY + ["--runs", str(tmp_path / "default")])
    assert drawn[1][0] == COURSE["task01"] and drawn[1][1] is not None, "on the default text they are drawn"
    assert "no attention picture" not in capsys.readouterr().out


def test_attention_map_writes_under_runs_by_default_and_its_help_example_is_one_line(tmp_path, monkeypatch, capsys):
    from course import attention_map

    tokenizer = CharTokenizer.from_text(plots.ATTENTION_TEXT)
    model = GPT(tokenizer.vocab_size, 16, 16, 2, 1)
    save_checkpoint(tmp_path / "mine.pt", {**model_payload(model), "tokenizer": tokenizer.to_dict()})
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    assert attention_map.main([str(tmp_path / "mine.pt")]) == 0
    assert list(Path(".").glob("*.png")) == [], "nothing in the working directory"
    assert Path("runs/attention/mine.png").read_bytes()[:8] == PNG
    assert f"wrote {Path('runs/attention/mine.png')}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        attention_map.main(["--help"])
    assert '--text "ROMEO:\\nBut soft, what light" --out romeo.png' in capsys.readouterr().out


@pytest.mark.parametrize("module, prog", [("course.bench", "python -m course.bench"), ("course.report", "python -m course.report"),
                                          ("course.attention_map", "python -m course.attention_map")])
def test_a_module_commands_usage_names_the_command_to_type(module, prog, capsys):
    import importlib

    with pytest.raises(SystemExit):
        importlib.import_module(module).main(["--help"])
    assert capsys.readouterr().out.startswith(f"usage: {prog} ")


def test_pytest_q_ends_with_the_summary_line(tmp_path):
    """README's `pytest -q`, with the repository's pytest.ini: a -q there as well would leave only the dots."""
    (tmp_path / "test_one.py").write_text("def test_one():\n    assert True\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-c", str(ROOT / "pytest.ini"), "-p", "no:cacheprovider",
                           "-q", str(tmp_path / "test_one.py")], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout.strip().splitlines()[-1], proc.stdout
