import csv
import importlib
import itertools
import re
import subprocess
import sys

import pytest

from conftest import ROOT

TASKS = ["task00_bigram", "task01", "task02", "task03", "task04", "task05", "task06"]
TINY = ["--max-iters", "12", "--eval-interval", "5", "--eval-iters", "2", "--sample-tokens", "40", "--device", "cpu"]
EPOCH = re.compile(r"^Epoch (\d+): avg train loss (\d+\.\d{4}) \| avg val loss (\d+\.\d{4})( \| .*)?$")
MEASURES = re.compile(r"^val \(\d[\d,]* characters\): loss \d+\.\d{4} \| perplexity \d+\.\d\d \| \d+\.\d{3} bits/char \| "
                      r"top-1 \d+\.\d% \| top-5 \d+\.\d%$")
PNG = b"\x89PNG\r\n\x1a\n"


def run_main(name, args):
    return importlib.import_module(name).main(args)


@pytest.mark.parametrize("name", TASKS)
def test_task_main_prints_the_course_format_then_the_measures(name, small_text_file, tmp_path, capsys):
    result = run_main(name, TINY + ["--data", str(small_text_file), "--runs", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    epochs = [i for i, line in enumerate(lines) if line.startswith("Epoch")]
    assert all(EPOCH.match(lines[i]) for i in epochs), lines
    assert [int(EPOCH.match(lines[i]).group(1)) for i in epochs] == [0, 5, 10, 11]
    assert MEASURES.match(lines[epochs[-1] + 1]), "the measures line comes right after the table"
    out = "\n".join(lines)
    assert "\n\nSampling 40 tokens from a trained model: \n" in out
    assert out.endswith(result["sample"].rstrip("\n"))
    assert len(result["sample"]) == 40
    assert "parameters:" in out and "block_size=8" in out


@pytest.mark.parametrize("name", ["task01", "task05"])
def test_a_run_leaves_its_history_and_pictures(name, tmp_path, capsys):
    """On Tiny Shakespeare (so that the attention text is in the vocabulary)."""
    result = run_main(name, TINY + ["--runs", str(tmp_path)])
    out = capsys.readouterr().out
    task_dir = tmp_path / name
    with open(task_dir / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    printed = [EPOCH.match(line).groups()[:3] for line in out.splitlines() if line.startswith("Epoch")]
    assert [(r["step"], f"{float(r['train_loss']):.4f}", f"{float(r['val_loss']):.4f}") for r in rows] == printed
    for picture in ("loss.png", "attention.png"):
        assert (task_dir / picture).read_bytes()[:8] == PNG
    assert f"run files: {task_dir / 'history.csv'}" in out
    assert sorted(result["files"]) == sorted(str(task_dir / f) for f in
                                             ("history.csv", "loss.png", "attention.png", "summary.json"))


def test_same_seed_same_table_and_sample(small_text_file):
    task = importlib.import_module("task06")
    args = TINY + ["--data", str(small_text_file), "--seed", "7", "--runs", ""]
    a, b = task.main(args), task.main(args)
    assert [(r["train"], r["val"]) for r in a["history"]] == [(r["train"], r["val"]) for r in b["history"]]
    assert a["sample"] == b["sample"]
    c = task.main(TINY + ["--data", str(small_text_file), "--seed", "8", "--runs", ""])
    assert c["sample"] != a["sample"]


def test_flags_override_the_config(small_text_file):
    result = run_main("task03", TINY + ["--data", str(small_text_file), "--n-embd", "16", "--runs", ""])
    assert result["config"].n_embd == 16
    assert result["model"].token_embedding.weight.shape[1] == 16


def run(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_help_lists_every_setting_with_its_default(capsys):
    import task02

    with pytest.raises(SystemExit) as exit_info:
        task02.main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    for flag in ("--max-iters", "--n-embd", "--n-head", "--device", "--seed", "--data", "--learning-rate"):
        assert flag in out
    assert "(default: 5000)" in out and "multi-head" in out.lower()


@pytest.mark.parametrize("script, absent", [
    ("task00_bigram", ["--n-embd", "--n-head", "--n-layer", "--dropout"]),
    ("task01", ["--n-head", "--n-layer", "--dropout"]),
    ("task03", ["--n-layer", "--dropout"]),
    ("task06", ["--dropout", "--checkpoint", "--threads", "--fast"]),
])
def test_each_task_offers_only_the_settings_it_uses(script, absent, capsys):
    with pytest.raises(SystemExit):
        run_main(script, ["--help"])
    out = capsys.readouterr().out
    for flag in absent:
        assert flag not in out, f"{script} offers {flag}"
    with pytest.raises(SystemExit) as exit_info:
        run_main(script, [absent[0], "2"])
    assert exit_info.value.code == 2
    assert f"unrecognized arguments: {absent[0]}" in capsys.readouterr().err


def test_the_printed_config_has_only_the_task_settings(small_text_file, capsys):
    run_main("task01", TINY + ["--data", str(small_text_file), "--runs", ""])
    lines = capsys.readouterr().out.splitlines()
    config_line = " ".join(itertools.takewhile(lambda line: line.startswith(("config: ", "        ")), lines))
    assert config_line.startswith("config: ") and "n_embd=32" in config_line
    assert "n_head" not in config_line and "n_layer" not in config_line


def refused(main, argv, capsys) -> str:
    """What a script's main says when it refuses argv: its exit status must be 2, with no traceback."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err, err
    return err


def test_missing_data_file_is_a_clear_error(tmp_path, capsys):
    import task01

    assert "no data file at" in refused(task01.main, ["--data", str(tmp_path / "missing.txt"), "--max-iters", "1"], capsys)


def test_indivisible_heads_is_a_clear_error(small_text_file, capsys):
    import task05

    err = refused(task05.main, ["--data", str(small_text_file), "--n-embd", "30", "--max-iters", "1"], capsys)
    assert "must be divisible by n_head" in err


@pytest.mark.parametrize("script, flag, value, message", [
    ("task01", "--batch-size", "0", "argument --batch-size: must be at least 1 (got 0)"),
    ("task01", "--block-size", "-3", "argument --block-size: must be at least 1 (got -3)"),
    ("task01", "--eval-interval", "0", "argument --eval-interval: must be at least 1"),
    ("task01", "--eval-iters", "0", "argument --eval-iters: must be at least 1"),
    ("task02", "--n-head", "0", "argument --n-head: must be at least 1"),
    ("task01", "--learning-rate", "nan", "argument --learning-rate: must be greater than 0"),
    ("task07", "--dropout", "1.5", "argument --dropout: must be at least 0 and below 1"),
    ("task07", "--time-budget", "-1", "argument --time-budget: must be a number of at least 0"),
    ("task07", "--weight-decay", "inf", "argument --weight-decay: must be a number of at least 0"),
    ("task07", "--vocab-size", "0", "argument --vocab-size: must be at least 1 (got 0)"),
    ("task09_rope", "--seeds", "0", "argument --seeds: must be at least 1 (got 0)"),
])
def test_out_of_range_settings_are_refused_before_anything_runs(script, flag, value, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_main(script, [flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("script, flag, value, choices", [
    ("task01", "--device", "gpu", "'auto', 'cuda', 'mps', 'cpu'"),
    ("task07", "--schedule", "cosin", "'constant', 'cosine'"),
    ("task07", "--preset", "laptop", "'cpu', 'gpu'"),
    ("task07", "--tokenizer", "bytes", "'char', 'bpe'"),
    ("task09_rope", "--positions", "alibi", "'rope', 'learned'"),
    ("task09_rope", "--mlp", "gelu", "'relu', 'relu2', 'swiglu'"),
    ("task09_rope", "--optimizer", "sgd", "'adamw', 'muon'"),
])
def test_a_misspelt_choice_is_refused_with_the_list_of_choices(script, flag, value, choices, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_main(script, [flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"unknown choice '{value}'; choose one of " in err or f"invalid choice: '{value}'" in err, err
    assert all(c.strip("'") in err for c in choices.split(", ")), err


def test_a_misspelt_choice_fails_when_the_config_is_made():
    from course.config import GPTConfig, ModernGPTConfig
    from gpt.errors import UserError

    with pytest.raises(UserError, match="schedule: unknown choice 'cosin'; choose one of constant, cosine"):
        GPTConfig(schedule="cosin")
    with pytest.raises(UserError, match="positions: unknown choice 'lerned'; choose one of rope, learned"):
        ModernGPTConfig(positions="lerned")
    with pytest.raises(UserError, match="device: unknown choice 'gpu'"):
        GPTConfig(device="gpu")


def test_no_task_script_imports_another():
    for path in ROOT.glob("task*.py"):
        assert not re.search(r"^\s*(from|import)\s+task\d", path.read_text(), re.M), path.name


def test_sample_tokens_0_samples_nothing_and_says_nothing_about_sampling(small_text_file, capsys):
    import task01

    result = task01.main(["--data", str(small_text_file), "--max-iters", "4", "--eval-interval", "2",
                          "--eval-iters", "1", "--sample-tokens", "0", "--runs", "", "--device", "cpu"])
    out = capsys.readouterr().out
    assert result["sample"] == "" and "Sampling" not in out, out
    assert out.splitlines()[-1].startswith("val ("), "the measures line ends the output: no blank sample after it"
