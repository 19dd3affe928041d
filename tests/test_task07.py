import csv
import dataclasses
import itertools
import os
import re
import signal
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from course.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from course.config import GPTConfig
from course.device import Precision
from gpt.errors import UserError
from course.exits import friendly_errors
from gpt.schedules import sgdr_schedule
from course.search import COLUMNS, grid_points, run_trials, write_csv
from gpt.train import make_optimizer

import task07


def tiny(tmp_path, small_text_file, **kw):
    base = dict(data=str(small_text_file), block_size=16, n_embd=16, n_head=2, n_layer=2, dropout=0.1,
                batch_size=4, learning_rate=3e-3, max_iters=12, eval_interval=4, eval_iters=2, final_eval_iters=3,
                device="cpu", sample_tokens=20, runs="", checkpoint=str(tmp_path / "ckpt" / "task07.pt"))
    base.update(kw)
    return GPTConfig(**base)


def fit(cfg, **kw):
    return task07.train_gpt(cfg, quiet=True, **kw)


def logging_to(monkeypatch, log):
    """The lines the next run prints go to log instead (a run prints through course.run.print_flushed)."""
    import course.run
    monkeypatch.setattr(course.run, "print_flushed", log)


def test_checkpoint_round_trip_gives_identical_logits(tmp_path, small_text_file):
    cfg = tiny(tmp_path, small_text_file)
    result = fit(cfg)
    ckpt = load_checkpoint(cfg.checkpoint)
    assert ckpt["state"]["iter"] == cfg.max_iters and ckpt["state"]["history"][-1]["final"], \
        "the model saved is the final one"
    assert ckpt["tokenizer"] == result["tokenizer"].to_dict() and "state" in ckpt["optimizer"]
    model, tokenizer = model_from_checkpoint(ckpt)
    idx = torch.randint(tokenizer.vocab_size, (2, cfg.block_size))
    result["model"].eval()
    assert torch.equal(model(idx)[0], result["model"](idx)[0])


def test_interrupted_write_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    path = tmp_path / "task07.pt"
    save_checkpoint(path, {"iter": 1, "weights": torch.ones(3)})

    def crash_mid_write(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip file")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash_mid_write)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"iter": 2, "weights": torch.zeros(3)})
    monkeypatch.undo()
    ckpt = load_checkpoint(path)
    assert ckpt["iter"] == 1 and torch.equal(ckpt["weights"], torch.ones(3))
    assert os.listdir(tmp_path) == ["task07.pt"], "the temporary file must be cleaned up"


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", b"not a checkpoint at all", b"hello", b"abc"])
def test_corrupt_checkpoint_gives_a_clear_error(tmp_path, content):
    path = tmp_path / "task07.pt"
    path.write_bytes(content)
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_foreign_old_and_missing_checkpoints_give_clear_errors(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(UserError, match="not a checkpoint of this project"):
        load_checkpoint(foreign)
    old = tmp_path / "old.pt"
    torch.save({"format": "gpt-curriculum-checkpoint/1", "model": {}}, old)
    with pytest.raises(UserError, match="older version of this project.*train it again"):
        load_checkpoint(old)
    with pytest.raises(UserError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt", how_to_make_one="Run python task07.py")


def test_a_new_run_does_not_replace_a_saved_model(tmp_path, small_text_file):
    cfg = tiny(tmp_path, small_text_file)
    fit(cfg)
    saved = load_checkpoint(cfg.checkpoint)
    with pytest.raises(UserError, match="already holds a model.*--resume.*--overwrite"):
        fit(cfg)
    assert torch.equal(load_checkpoint(cfg.checkpoint)["model"]["lm_head.weight"], saved["model"]["lm_head.weight"])
    fit(dataclasses.replace(cfg, seed=cfg.seed + 1), overwrite=True)
    assert load_checkpoint(cfg.checkpoint)["config"]["seed"] == cfg.seed + 1


def test_a_resumed_run_gives_the_same_losses_as_an_uninterrupted_one(tmp_path, small_text_file, monkeypatch):
    """Interrupted after the evaluation at step 8 (Ctrl-C), then resumed: the same table as one run."""
    whole = fit(tiny(tmp_path, small_text_file, max_iters=17, checkpoint=""))
    cfg = tiny(tmp_path, small_text_file, max_iters=17)

    def stop_at_8(line=""):
        if line.startswith("Epoch 8:"):
            raise KeyboardInterrupt

    logging_to(monkeypatch, stop_at_8)
    with pytest.raises(SystemExit) as exit_info, friendly_errors(checkpoint=cfg.checkpoint):  # as task07.main runs it
        task07.train_gpt(cfg)
    assert exit_info.value.code == 130
    assert load_checkpoint(cfg.checkpoint)["state"]["iter"] == 8
    lines = []
    logging_to(monkeypatch, lambda line="": lines.append(line))
    resumed = task07.train_gpt(cfg, resume=True)
    assert any(f"resumed from {cfg.checkpoint} at iteration 8" in line for line in lines)
    assert [(r["iter"], r["train"], r["val"]) for r in resumed["history"]] == \
           [(r["iter"], r["train"], r["val"]) for r in whole["history"]]
    assert resumed["sample"] == whole["sample"]


def test_resuming_with_other_model_settings_is_a_clear_error(tmp_path, small_text_file):
    cfg = tiny(tmp_path, small_text_file)
    fit(cfg)
    with pytest.raises(UserError, match=r"holds a model made with other settings .*\(n_layer=3 here\)\. To continue it, pass --n-layer 2"):
        fit(dataclasses.replace(cfg, n_layer=3), resume=True)


def test_resume_without_a_checkpoint_says_how_to_make_one(tmp_path, small_text_file):
    with pytest.raises(UserError, match=r"(?s)no checkpoint at .*without --resume"):
        fit(tiny(tmp_path, small_text_file), resume=True)


def test_a_cuda_run_turns_tf32_matmuls_on_and_a_cpu_run_leaves_them(monkeypatch, small_text_file):
    """A run on a CUDA GPU asks for TF32 matmuls, which its tensor cores run fast; a CPU run leaves them."""
    import course.run

    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    settings = dict(data=str(small_text_file), runs="", checkpoint="")
    assert course.run.Run("task07", GPTConfig(device="cpu", **settings), task07.build_model).device == "cpu"
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    monkeypatch.setattr(course.run, "resolve_device", lambda name: "cuda")  # a CUDA GPU, as far as the run can tell
    monkeypatch.setattr(course.run, "choose_precision", lambda device, asked: Precision("fp32", device, "test"))
    assert course.run.Run("task07", GPTConfig(device="cuda", **settings), task07.build_model).device == "cuda"
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32


def test_a_run_gets_the_fused_optimizer(tmp_path, small_text_file, monkeypatch):
    """The fused AdamW a run gets on a CPU (or CUDA GPU). Its other half, speedups=False giving an unfused
    one, is gone with speedups=; make_optimizer(fused=False) is what still unfuses it."""
    made = []
    real = make_optimizer

    def spy(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr("task07.make_optimizer", spy)
    fit(tiny(tmp_path, small_text_file, checkpoint=""))
    assert len(made) == 1 and made[0].defaults["fused"] is True
    assert make_optimizer(torch.nn.Linear(2, 2).parameters(), 1e-3, fused=False).defaults["fused"] is False


def test_the_gpu_path_runs_forward_passes_in_bf16(tmp_path, small_text_file, monkeypatch):
    """The precision an Ampere GPU gets (bf16 autocast), through the whole run, on the CPU."""
    bf16 = lambda device, asked="auto": Precision("bf16", device, "test")  # noqa: E731
    monkeypatch.setattr("course.run.choose_precision", bf16)  # what the run trains, evaluates, times and measures in
    dtypes = []
    real_build = task07.build_model

    def build(cfg, vocab_size):
        model = real_build(cfg, vocab_size)
        model.lm_head.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
        return model

    monkeypatch.setattr(task07, "build_model", build)
    result = fit(tiny(tmp_path, small_text_file, checkpoint=""))
    assert torch.bfloat16 in dtypes, "training and evaluation forward passes ran under bf16 autocast"
    assert all(torch.isfinite(torch.tensor(r["val"])) for r in result["history"])
    assert result["model"].lm_head.weight.dtype == torch.float32


@pytest.mark.slow
def test_compiled_model_trains_like_the_eager_one(tmp_path, small_text_file, monkeypatch):
    eager = fit(tiny(tmp_path, small_text_file, max_iters=6, dropout=0.0, checkpoint=""))
    compiled_models = []
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, *a, **k: compiled_models.append(model) or
                        real_compile(model, *a, **k))
    compiled = fit(tiny(tmp_path, small_text_file, max_iters=6, dropout=0.0, checkpoint="", compile=True))
    assert compiled_models, "--compile compiled the model (else this compares the eager model with itself)"
    for a, b in zip(eager["history"], compiled["history"]):
        assert a["val"] == pytest.approx(b["val"], abs=1e-3)
    assert len(compiled["history"]) == len(eager["history"])


def test_trials_csv_to_a_directory_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="is a directory"):
        write_csv([], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_grid_points_are_every_combination_in_order():
    assert grid_points({"learning_rate": [1e-3, 2e-3], "n_embd": [96, 128]}) == [
        {"learning_rate": 1e-3, "n_embd": 96}, {"learning_rate": 1e-3, "n_embd": 128},
        {"learning_rate": 2e-3, "n_embd": 96}, {"learning_rate": 2e-3, "n_embd": 128}]


def test_trials_run_end_to_end_and_write_a_sorted_csv(tmp_path, small_text_file):
    base = tiny(tmp_path, small_text_file, checkpoint="")
    out = tmp_path / "trials.csv"
    lines = []
    points = grid_points({"learning_rate": [1e-3, 3e-3], "n_layer": [1, 2]})
    trials = [dataclasses.replace(base, **p, checkpoint="", runs="", sample_tokens=0) for p in points]  # as task07.main
    rows = run_trials(lambda trial: fit(trial), trials, points, out, "python task07.py --preset cpu",
                      task07.build_model, log=lines.append)
    assert lines[0].startswith("about ") and lines[0].endswith("here for the 4 trials"), lines[0]
    assert re.match(r"trial 0 of 4 \(about \d+ seconds\): python task07.py", lines[1]), lines[1]
    assert len(rows) == 4 and [r["val_loss"] for r in rows] == sorted(r["val_loss"] for r in rows)
    with open(out, newline="") as f:
        saved = list(csv.DictReader(f))
    assert list(saved[0]) == COLUMNS and [float(r["val_loss"]) for r in saved] == [r["val_loss"] for r in rows]
    best = rows[0]
    assert lines[-1].endswith(f"best: python task07.py --preset cpu --learning-rate {best['learning_rate']} "
                              f"--n-layer {best['n_layer']} --seed 1337")
    again = fit(dataclasses.replace(base, learning_rate=best["learning_rate"], n_layer=best["n_layer"]))
    assert round(again["history"][-1]["val"], 4) == best["val_loss"], "a trial's command gives its number again"


def test_task07_grid_from_the_command_line(tmp_path, small_text_file, capsys):
    rows = task07.main(["--preset", "cpu", "--data", str(small_text_file), "--max-iters", "4", "--eval-interval", "2",
                        "--eval-iters", "1", "--final-eval-iters", "1", "--n-embd", "16", "--n-layer", "1",
                        "--block-size", "16", "--batch-size", "4", "--device", "cpu", "--learning-rate", "1e-3", "2e-3",
                        "--csv", str(tmp_path / "grid.csv")])
    assert sorted(r["learning_rate"] for r in rows) == [1e-3, 2e-3]
    assert "2 trials from the cpu preset" in capsys.readouterr().out


def test_an_empty_grid_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        task07.main(["--learning-rate"])
    assert exit_info.value.code == 2
    assert "argument --learning-rate: expected at least one argument" in capsys.readouterr().err


def test_task07_main_prints_the_course_format_and_the_final_line(tmp_path, small_text_file, capsys):
    ckpt = tmp_path / "t.pt"
    result = task07.main(["--preset", "cpu", "--data", str(small_text_file), "--max-iters", "6",
                          "--eval-interval", "5", "--eval-iters", "1", "--n-embd", "16", "--n-layer", "1",
                          "--block-size", "16", "--batch-size", "4", "--sample-tokens", "30", "--device", "cpu",
                          "--checkpoint", str(ckpt), "--runs", ""])
    out = capsys.readouterr().out
    assert "preset: cpu (asked for with --preset)" in out
    assert "Epoch 0: avg train loss" in out and "Epoch 5: avg train loss" in out
    assert "Epoch 6: avg train loss" in out and "(final: 200 batches per split, after the last step)" in out
    assert "Sampling 30 tokens from a trained model: " in out and len(result["sample"]) == 30
    assert load_checkpoint(ckpt)["state"]["iter"] == 6


SCHEDULED = ["--preset", "cpu", "--max-iters", "8", "--eval-interval", "4", "--eval-iters", "1", "--final-eval-iters",
             "1", "--n-embd", "16", "--n-layer", "1", "--block-size", "16", "--batch-size", "4", "--sample-tokens", "5",
             "--device", "cpu", "--checkpoint", "", "--runs", ""]


def printed_config(out: str) -> str:
    """The config a run printed: its "config: " line and the indented lines that continue it."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("config: "))
    return " ".join([lines[start], *itertools.takewhile(lambda line: line.startswith("        "), lines[start + 1:])])


def learning_rates_of_the_run(monkeypatch) -> list[float]:
    """The learning rate of every step of the next task 07 run, as its optimizer steps with it."""
    lrs = []

    def made(*args, **kwargs):
        optimizer = make_optimizer(*args, **kwargs)
        optimizer.register_step_pre_hook(  # the run's own optimizer, not the copy its time estimate steps
            lambda opt, a, k: opt is optimizer and lrs.append(opt.param_groups[0]["lr"]))
        return optimizer

    monkeypatch.setattr(task07, "make_optimizer", made)
    return lrs


def test_task07_runs_the_sgdr_schedule_and_prints_its_cycles(small_text_file, monkeypatch, capsys):
    lrs = learning_rates_of_the_run(monkeypatch)
    result = task07.main(SCHEDULED + ["--data", str(small_text_file), "--schedule", "sgdr", "--cycles", "2"])
    config = printed_config(capsys.readouterr().out)
    assert re.search(r"\bschedule=sgdr\b", config) and re.search(r"\bcycles=2\b", config), config
    assert re.search(r"\bcycle_mult=2\.0\b", config), config
    cfg = result["config"]
    assert (cfg.schedule, cfg.cycles, cfg.cycle_mult) == ("sgdr", 2, 2.0)
    lr_at = sgdr_schedule(cfg.learning_rate, cfg.min_lr, cfg.warmup, cycles=2, cycle_mult=2.0)
    assert lrs == pytest.approx([lr_at(it / cfg.max_iters) for it in range(cfg.max_iters)]), "two cycles, restarted"
    assert result["history"][-1]["final"] and all(torch.isfinite(torch.tensor(r["val"])) for r in result["history"])


def test_a_cosine_run_prints_no_cycles(small_text_file, capsys):
    task07.main(SCHEDULED + ["--data", str(small_text_file), "--schedule", "cosine"])
    config = printed_config(capsys.readouterr().out)
    assert re.search(r"\bschedule=cosine\b", config), config
    assert not re.search(r"\bcycles=", config) and not re.search(r"\bcycle_mult=", config), config


@pytest.mark.slow  # a process started per test, signalled or cut off: seconds each
def test_ctrl_c_during_training_says_where_the_checkpoint_is(tmp_path, small_text_file):
    ckpt = tmp_path / "t.pt"
    proc = subprocess.Popen(
        [sys.executable, "task07.py", "--preset", "cpu", "--data", str(small_text_file), "--max-iters", "100000",
         "--eval-interval", "20", "--eval-iters", "1", "--n-embd", "16", "--n-layer", "1", "--block-size", "16",
         "--batch-size", "4", "--device", "cpu", "--checkpoint", str(ckpt), "--runs", ""],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # Ctrl-C as in a terminal
    for line in proc.stdout:  # wait until a checkpoint has been written
        if line.startswith("Epoch 20:"):
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in err
    assert f"is in {ckpt}; continue with --resume" in err
    assert load_checkpoint(ckpt)["state"]["iter"] >= 20
