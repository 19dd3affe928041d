import importlib
import re
import subprocess
import sys

import pytest

from conftest import ROOT

TASKS = ["task01", "task02", "task03", "task04", "task05", "task06"]
TINY = ["--max-iters", "12", "--eval-interval", "5", "--eval-iters", "2", "--sample-tokens", "40",
        "--device", "cpu", "--threads", "1"]
EPOCH = re.compile(r"^Epoch (\d+): avg train loss (\d+\.\d{4}) \| avg val loss (\d+\.\d{4})( \| .*)?$")


@pytest.mark.parametrize("name", TASKS)
def test_task_main_prints_the_course_format(name, small_text_file, capsys):
    result = importlib.import_module(name).main(TINY + ["--data", str(small_text_file)])
    out = capsys.readouterr().out
    epochs = [EPOCH.match(line) for line in out.splitlines() if line.startswith("Epoch")]
    assert all(epochs), out
    assert [int(m.group(1)) for m in epochs] == [0, 5, 10, 11]
    assert "\n\nSampling 40 tokens from a trained model: \n" in out
    assert out.rstrip("\n").endswith(result["sample"].rstrip("\n"))
    assert len(result["sample"]) == 40
    assert "parameters:" in out and "block_size=8" in out


def test_same_seed_same_table_and_sample(small_text_file):
    task = importlib.import_module("task06")
    args = TINY + ["--data", str(small_text_file), "--seed", "7"]
    a, b = task.main(args), task.main(args)
    assert [(r["train"], r["val"]) for r in a["history"]] == [(r["train"], r["val"]) for r in b["history"]]
    assert a["sample"] == b["sample"]
    c = task.main(TINY + ["--data", str(small_text_file), "--seed", "8"])
    assert c["sample"] != a["sample"]


def test_flags_override_the_config(small_text_file):
    result = importlib.import_module("task03").main(TINY + ["--data", str(small_text_file), "--n-embd", "16"])
    assert result["config"].n_embd == 16
    assert result["model"].token_embedding.weight.shape[1] == 16


def run(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_help_lists_every_setting_with_its_default():
    proc = run("task02.py", "--help")
    assert proc.returncode == 0
    for flag in ("--max-iters", "--n-embd", "--device", "--seed", "--data", "--learning-rate"):
        assert flag in proc.stdout
    assert "(default: 5000)" in proc.stdout and "multi-head" in proc.stdout.lower()


def test_missing_data_file_is_a_clear_error(tmp_path):
    proc = run("task01.py", "--data", str(tmp_path / "missing.txt"), "--max-iters", "1")
    assert proc.returncode == 2
    assert "no data file at" in proc.stderr and "Traceback" not in proc.stderr


def test_indivisible_heads_is_a_clear_error(small_text_file):
    proc = run("task05.py", "--data", str(small_text_file), "--n-embd", "30", "--max-iters", "1")
    assert proc.returncode == 2
    assert "must be divisible by n_head" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("script, flag, value, message", [
    ("task01", "--batch-size", "0", "argument --batch-size: must be at least 1 (got 0)"),
    ("task01", "--block-size", "-3", "argument --block-size: must be at least 1 (got -3)"),
    ("task01", "--eval-interval", "0", "argument --eval-interval: must be at least 1"),
    ("task01", "--eval-iters", "0", "argument --eval-iters: must be at least 1"),
    ("task02", "--n-head", "0", "argument --n-head: must be at least 1"),
    ("task01", "--learning-rate", "nan", "argument --learning-rate: must be greater than 0"),
    ("task01", "--threads", "-1", "argument --threads: must be at least 0"),
    ("task07", "--dropout", "1.5", "argument --dropout: must be at least 0 and below 1"),
    ("task07", "--time-budget", "-1", "argument --time-budget: must be at least 0"),
    ("task07", "--trial-budget", "0", "argument --trial-budget: must be greater than 0"),
    ("task09_rope", "--seeds", "0", "argument --seeds: must be at least 1 (got 0)"),
])
def test_out_of_range_settings_are_refused_before_anything_runs(script, flag, value, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(script).main([flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
