import dataclasses
import importlib
import os

import pytest
import torch

from gpt.checkpoint import load_checkpoint, save_checkpoint
from gpt.config import ScaleConfig
from gpt.errors import UserError
from gpt.scale import model_from_checkpoint, train_gpt
from gpt.search import SPACE, search, write_csv
from gpt.train import lr_at, make_optimizer, train
from gpt.model import gpt_model


def tiny(tmp_path, small_text_file, **kw):
    base = dict(data=str(small_text_file), block_size=16, n_embd=16, n_head=2, n_layer=2, dropout=0.1,
                batch_size=4, learning_rate=3e-3, max_iters=12, eval_interval=4, eval_iters=2, device="cpu",
                threads=1, sample_tokens=20, checkpoint=str(tmp_path / "ckpt" / "task07.pt"))
    base.update(kw)
    return ScaleConfig(**base)


def quiet(*_):
    pass


def test_checkpoint_round_trip_gives_identical_logits(tmp_path, small_text_file):
    cfg = tiny(tmp_path, small_text_file)
    result = train_gpt(cfg, log=quiet, progress=False)
    ckpt = load_checkpoint(cfg.checkpoint)
    assert ckpt["iter"] == result["best"]["iter"] and ckpt["val_loss"] == result["best"]["val"]
    assert ckpt["vocab"] == result["tokenizer"].vocab and "state" in ckpt["optimizer"]
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


def test_foreign_and_missing_checkpoints_give_clear_errors(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(UserError, match="not a checkpoint of this project"):
        load_checkpoint(foreign)
    with pytest.raises(UserError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt", how_to_make_one="Run python task07.py")


def test_a_new_run_does_not_replace_a_saved_model(tmp_path, small_text_file):
    cfg = tiny(tmp_path, small_text_file)
    train_gpt(cfg, log=quiet, progress=False)
    saved = load_checkpoint(cfg.checkpoint)
    with pytest.raises(UserError, match="already holds a model.*--resume.*--overwrite"):
        train_gpt(cfg, log=quiet, progress=False)
    assert torch.equal(load_checkpoint(cfg.checkpoint)["model"]["lm_head.weight"], saved["model"]["lm_head.weight"])
    train_gpt(dataclasses.replace(cfg, seed=cfg.seed + 1), log=quiet, progress=False, overwrite=True)
    replaced = load_checkpoint(cfg.checkpoint)
    assert replaced["config"]["seed"] == cfg.seed + 1


def test_search_results_to_a_directory_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="is a directory"):
        write_csv([], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_resume_continues_from_the_saved_iteration(tmp_path, small_text_file):
    cfg = tiny(tmp_path, small_text_file, dropout=0.0, max_iters=9)
    first = train_gpt(cfg, log=quiet, progress=False)
    saved = load_checkpoint(cfg.checkpoint)["iter"]
    assert saved == first["best"]["iter"] and saved > 0
    lines = []
    resumed = train_gpt(dataclasses.replace(cfg, max_iters=17), resume=True, log=lines.append, progress=False)
    assert any(f"resumed from {cfg.checkpoint} at iteration {saved}" in line for line in lines)
    iters = [r["iter"] for r in resumed["history"]]
    assert iters[0] > saved and iters[-1] == 16
    assert all(i % 4 == 0 or i == 16 for i in iters)


def test_resume_without_a_checkpoint_says_how_to_make_one(tmp_path, small_text_file):
    with pytest.raises(UserError, match=r"(?s)no checkpoint at .*without --resume"):
        train_gpt(tiny(tmp_path, small_text_file), resume=True, log=quiet)


def test_budgeted_schedule_ends_at_min_lr(tmp_path, small_text_file):
    torch.manual_seed(0)
    model = gpt_model(20, 8, 16, 2, 1)
    data = torch.arange(2000) % 20
    optimizer = make_optimizer(model, 1e-2)
    seen = []
    history = train(model, optimizer, data, data, batch_size=2, block_size=8, max_iters=10**9, eval_interval=10**9,
                    eval_iters=1, seed=0, time_budget=0.5, schedule={"peak": 1e-2, "min_lr": 1e-4, "warmup": 0.1},
                    on_eval=lambda r: seen.append(optimizer.param_groups[0]["lr"]))
    assert history[-1]["time"] >= 0.5 and history[-1]["iter"] > 5
    # the last update ran within one step of the budget's end, where the schedule is at its minimum
    assert abs(seen[-1] - 1e-4) < 0.02 * 1e-2, f"final learning rate {seen[-1]}"
    assert lr_at(1.0, 1e-2, 1e-4, 0.1) == pytest.approx(1e-4)


def test_dropout_is_active_in_train_mode_and_off_in_eval_mode():
    model = gpt_model(20, 8, 16, 2, 2, dropout=0.2)
    idx = torch.randint(20, (2, 8))
    model.train()
    assert not torch.equal(model(idx)[0], model(idx)[0])
    model.eval()
    assert torch.equal(model(idx)[0], model(idx)[0])


def test_gpu_code_path_runs_on_cpu_with_the_same_flags(tmp_path, small_text_file):
    """bf16 autocast and the fused optimizer, as the gpu preset uses them on CUDA, for a few steps."""
    torch.manual_seed(0)
    model = gpt_model(20, 16, 16, 2, 2, dropout=0.2)
    data = torch.arange(3000) % 20
    optimizer = make_optimizer(model, 3e-3)
    before = model.lm_head.weight.detach().clone()
    dtypes = []
    model.lm_head.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    history = train(model, optimizer, data, data, batch_size=4, block_size=16, max_iters=6,
                    eval_interval=5, eval_iters=2, seed=0, amp_dtype=torch.bfloat16)
    assert [r["iter"] for r in history] == [0, 5]
    assert all(torch.isfinite(torch.tensor(r["val"])) for r in history)
    assert optimizer.defaults["fused"] is True
    assert dtypes and set(dtypes) == {torch.bfloat16}, "every forward pass ran under bf16 autocast"
    assert model.lm_head.weight.dtype == torch.float32 and not torch.equal(model.lm_head.weight, before)


@pytest.mark.slow
def test_compiled_model_trains_on_cpu(tmp_path, small_text_file):
    result = train_gpt(tiny(tmp_path, small_text_file, compile=True, max_iters=3), log=quiet, progress=False)
    assert len(result["history"]) == 2


def test_search_runs_end_to_end(tmp_path, small_text_file):
    space = {"batch_size": [4], "block_size": [8, 16], "learning_rate": [1e-3, 3e-3], "n_embd": [16],
             "n_head": [2, 4], "n_layer": [1], "dropout": [0.0]}
    base = tiny(tmp_path, small_text_file, eval_iters=1, checkpoint="")
    out = tmp_path / "search.csv"
    rows = search(base, total_budget=4.0, trial_budget=0.4, out_csv=out, space=space, confirm_seeds=1, log=quiet)
    assert len(rows) >= 3 + 2  # at least three trials (room for 0.9 s of overhead each), then the best two again
    trials = [r for r in rows if r["seed"] == base.seed]
    assert [r["val_loss"] for r in trials] == sorted(r["val_loss"] for r in trials)
    lines = out.read_text().splitlines()
    assert lines[0].startswith("trial,seed,batch_size") and len(lines) == len(rows) + 1
    assert set(SPACE) == set(space)


def test_task07_main_prints_the_course_format(tmp_path, small_text_file, capsys):
    task = importlib.import_module("task07")
    ckpt = tmp_path / "t.pt"
    result = task.main(["--preset", "cpu", "--data", str(small_text_file), "--time-budget", "0", "--max-iters", "6",
                        "--eval-interval", "5", "--eval-iters", "1", "--n-embd", "16", "--n-layer", "1",
                        "--block-size", "16", "--batch-size", "4", "--sample-tokens", "30", "--device", "cpu",
                        "--checkpoint", str(ckpt)])
    out = capsys.readouterr().out
    assert "preset: cpu (asked for with --preset)" in out
    assert "Epoch 0: avg train loss" in out and "Epoch 5: avg train loss" in out
    assert "Sampling 30 tokens from a trained model: " in out and len(result["sample"]) == 30
    assert ckpt.exists()


def test_ctrl_c_during_training_says_where_the_best_checkpoint_is(tmp_path, small_text_file):
    import signal
    import subprocess
    import sys

    from conftest import ROOT

    ckpt = tmp_path / "t.pt"
    proc = subprocess.Popen(
        [sys.executable, "task07.py", "--preset", "cpu", "--data", str(small_text_file), "--time-budget", "0",
         "--max-iters", "100000", "--eval-interval", "20", "--eval-iters", "1", "--n-embd", "16", "--n-layer", "1",
         "--block-size", "16", "--batch-size", "4", "--device", "cpu", "--threads", "1", "--checkpoint", str(ckpt)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # Ctrl-C as in a terminal
    for line in proc.stdout:  # wait until a checkpoint has been written
        if line.startswith("Epoch 20:"):
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in err
    assert f"is in {ckpt}; continue with --resume" in err
    assert load_checkpoint(ckpt)["iter"] >= 0
