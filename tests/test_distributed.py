"""Data-parallel training (course/distributed.py): torchrun's processes, and --grad-accum's micro-steps,
train the model one process trains with the same global batch, to floating-point tolerance.

The torchrun tests start real processes that exchange gradients through gloo on the CPU, as CI can."""

import csv
import os
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT
from course.checkpoint import load_checkpoint, model_from_checkpoint
from course.config import GPTConfig
from course.distributed import check_divisible
from gpt.errors import UserError

import task07

# Measured on these tiny runs: the losses of two processes, or of micro-steps, against one process's
# differ by at most 1e-6 (history.csv's last digit: the gradients are added in another order); 1e-5
# leaves room and still catches a wrong share of the batch. Task 07's preset: RESEARCH_LOG.md.
TOLERANCE = 1e-5
TINY = ["--block-size", "16", "--n-embd", "16", "--n-head", "2", "--n-layer", "2", "--batch-size", "8",
        "--eval-interval", "3", "--eval-iters", "2", "--final-eval-iters", "2", "--sample-tokens", "10",
        "--device", "cpu", "--learning-rate", "3e-3"]


def run(launcher: list[str], script: str, args: list[str], env=None, timeout=180) -> subprocess.CompletedProcess:
    return subprocess.run([*launcher, script, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def torchrun(n: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"]


PYTHON = [sys.executable]


def no_traceback_of_ours(stderr: str) -> bool:
    """torchrun reports a process that exited with an error with a traceback of its own launcher; the
    processes themselves must end with their message."""
    return f'File "{ROOT}' not in stderr


def history(folder) -> list[tuple[int, float, float]]:
    with open(folder / "task07" / "history.csv", newline="") as f:
        return [(int(r["step"]), float(r["train_loss"]), float(r["val_loss"])) for r in csv.DictReader(f)]


def assert_same_losses(a, b):
    assert [r[0] for r in a] == [r[0] for r in b], "the same evaluations, at the same steps"
    worst = max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra[1:], rb[1:]))
    assert worst < TOLERANCE, f"losses differ by up to {worst:.2e}"


def tiny(small_text_file, tmp_path, name: str, *more: str) -> list[str]:
    return [*TINY, "--data", str(small_text_file), "--runs", str(tmp_path / name),
            "--checkpoint", str(tmp_path / f"{name}.pt"), *more]


@pytest.mark.slow  # a process or more started per test: seconds each
def test_two_processes_under_torchrun_print_the_table_once_and_train_what_one_process_trains(small_text_file, tmp_path):
    one = run(PYTHON, "task07.py", tiny(small_text_file, tmp_path, "one", "--max-iters", "6"))
    two = run(torchrun(2), "task07.py", tiny(small_text_file, tmp_path, "two", "--max-iters", "6"))
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    epochs = [line for line in two.stdout.splitlines() if line.startswith("Epoch ")]
    assert len(epochs) == 3, f"the table once (steps 0, 3, the final 6), not once per process:\n{two.stdout}"
    assert "data parallel: 2 processes (gloo) | global batch 8 = 2 x 1 micro-step x micro-batch 4" in two.stdout
    assert two.stdout.count("Sampling") == 1 and two.stdout.count("config:") == 1
    assert_same_losses(history(tmp_path / "one"), history(tmp_path / "two"))
    a = model_from_checkpoint(load_checkpoint(tmp_path / "one.pt"))[0]
    b = model_from_checkpoint(load_checkpoint(tmp_path / "two.pt"))[0]  # process 0 saved it, unwrapped
    worst = max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))
    assert worst < TOLERANCE, f"the trained weights differ by up to {worst:.2e}"


@pytest.mark.slow  # a process or more started per test: seconds each
def test_a_torchrun_checkpoint_resumes_in_one_process_and_a_single_process_one_under_torchrun(small_text_file,
                                                                                             tmp_path):
    """6 steps one way, then --resume to 9 steps the other way, against 9 steps in one process. With a
    constant learning rate, a run of 6 steps is the first 6 steps of a run of 9 (a schedule would
    follow the step count), and its final evaluation draws what the 9-step run's evaluation at 6 draws."""
    constant = ["--schedule", "constant"]
    whole = run(PYTHON, "task07.py", tiny(small_text_file, tmp_path, "whole", "--max-iters", "9", *constant))
    assert whole.returncode == 0, whole.stderr
    for first, then, name in ((torchrun(2), PYTHON, "ddp_then_one"), (PYTHON, torchrun(2), "one_then_ddp")):
        six = run(first, "task07.py", tiny(small_text_file, tmp_path, name, "--max-iters", "6", *constant))
        assert six.returncode == 0, six.stderr
        if first is not PYTHON:  # a checkpoint two processes wrote streams in task 08 as one process's does
            streamed = run(PYTHON, "task08_infinite.py", ["--checkpoint", str(tmp_path / f"{name}.pt"),
                                                          "--max-new-tokens", "40", "--device", "cpu"])
            assert streamed.returncode == 0 and len(streamed.stdout) == len("\n") + 40 + len("\n"), streamed.stderr
        nine = run(then, "task07.py", tiny(small_text_file, tmp_path, name, "--max-iters", "9", *constant, "--resume"))
        assert nine.returncode == 0, nine.stderr
        assert "resumed from" in nine.stdout and nine.stdout.count("resumed from") == 1
        assert_same_losses(history(tmp_path / "whole"), history(tmp_path / name))


def test_grad_accum_trains_the_model_one_step_trains(small_text_file, tmp_path):
    def fit(**kw):
        cfg = GPTConfig(data=str(small_text_file), block_size=16, n_embd=16, n_head=2, n_layer=2, batch_size=8,
                        max_iters=6, eval_interval=3, eval_iters=2, final_eval_iters=2, device="cpu",
                        sample_tokens=5, runs="", checkpoint="", **kw)
        return task07.train_gpt(cfg, quiet=True)

    one, four = fit(), fit(grad_accum=4)
    a = [(r["iter"], r["train"], r["val"]) for r in one["history"]]
    b = [(r["iter"], r["train"], r["val"]) for r in four["history"]]
    assert_same_losses(a, b)
    worst = max((p - q).abs().max().item() for p, q in zip(one["model"].parameters(), four["model"].parameters()))
    assert worst < TOLERANCE, f"the trained weights differ by up to {worst:.2e}"


def test_a_batch_that_the_processes_and_micro_steps_do_not_divide_is_refused():
    with pytest.raises(UserError, match="multiple of 6"):
        check_divisible(16, 2, 3)
    with pytest.raises(UserError, match="grad-accum"):
        GPTConfig(batch_size=16, grad_accum=3)
    check_divisible(16, 2, 4)  # 2 processes x 4 micro-steps x 2 rows


@pytest.mark.slow  # a process or more started per test: seconds each
def test_under_torchrun_a_batch_that_does_not_split_nccl_without_gpus_and_tasks_00_06_get_a_message(
        small_text_file, tmp_path):
    uneven = run(torchrun(2), "task07.py", tiny(small_text_file, tmp_path, "x", "--max-iters", "2",
                                                "--batch-size", "7"))
    assert uneven.returncode != 0 and "must split evenly into 2 processes" in uneven.stderr
    assert no_traceback_of_ours(uneven.stderr), uneven.stderr
    if not torch.cuda.is_available():
        nccl = run(torchrun(2), "task07.py", tiny(small_text_file, tmp_path, "y", "--max-iters", "2",
                                                  "--backend", "nccl"))
        assert nccl.returncode != 0 and "--backend nccl needs CUDA GPUs" in nccl.stderr
        assert no_traceback_of_ours(nccl.stderr), nccl.stderr
    compare = run(torchrun(2), "task09_rope.py", tiny(small_text_file, tmp_path, "w", "--max-iters", "2",
                                                      "--compare", "mlp=relu2"))
    assert compare.returncode != 0 and "--compare trains its arms one after the other" in compare.stderr
    assert no_traceback_of_ours(compare.stderr), compare.stderr
    task01 = run(torchrun(2), "task01.py", ["--max-iters", "2", "--runs", ""])
    assert task01.returncode != 0 and "torchrun is for tasks 07 and 09" in task01.stderr
    assert no_traceback_of_ours(task01.stderr), task01.stderr


DIES = """
import os, sys
sys.path.insert(0, {root!r})
import gpt.train
import task07
if os.environ["RANK"] == "1":
    real, calls = gpt.train.get_batch, []
    def get_batch(*args, **kwargs):  # process 1 dies at its third step, without a word
        calls.append(1)
        if len(calls) == 3:
            os._exit(9)
        return real(*args, **kwargs)
    gpt.train.get_batch = get_batch
sys.exit(0 if task07.main(sys.argv[1:]) is not None else 1)
"""


@pytest.mark.slow  # a process or more started per test: seconds each
def test_when_a_process_dies_the_others_stop_and_the_failure_names_it(small_text_file, tmp_path):
    script = tmp_path / "dies.py"
    script.write_text(DIES.format(root=str(ROOT)))
    start = time.perf_counter()
    proc = run(torchrun(2), str(script), tiny(small_text_file, tmp_path, "z", "--max-iters", "50"), timeout=120)
    took = time.perf_counter() - start
    assert proc.returncode != 0
    assert took < 90, f"the run took {took:.0f} s to stop"
    assert "rank      : 1" in proc.stderr or "rank: 1" in proc.stderr or "[1]" in proc.stderr, proc.stderr[-2000:]


def test_each_process_takes_its_own_rows_of_the_batch_and_together_they_are_the_batch(monkeypatch):
    import course.distributed as distributed

    x, y = torch.arange(32).view(8, 4), torch.arange(32).view(8, 4) + 100
    shares = []
    for rank in range(2):
        monkeypatch.setattr(distributed, "rank_and_world_size", lambda rank=rank: (rank, 2))
        shares.append(distributed.this_ranks_share(x, y, micro_steps=2))
    rows = [xm for share in shares for xm, _ in share]
    assert [len(r) for r in rows] == [2, 2, 2, 2], "2 processes x 2 micro-steps x 2 rows"
    assert torch.equal(torch.cat(rows), x), "in order, every row once"
    assert torch.equal(torch.cat([ym for share in shares for _, ym in share]), y)


def test_micro_steps_add_up_to_the_gradient_of_the_whole_batch_under_plain_sgd(small_text_file):
    """SGD, whose step is proportional to the gradient (AdamW's is not), so that a wrong scale of the
    micro-steps' losses shows."""
    from types import SimpleNamespace

    from course.config import TrainConfig
    from gpt.data import load_dataset
    from gpt.model import GPT
    from gpt.train import train

    data = load_dataset(str(small_text_file))
    models = []
    for k in (1, 4):
        torch.manual_seed(0)
        model = GPT(data.tokenizer.vocab_size, 16, 16, 2, 1)
        cfg = TrainConfig(batch_size=8, block_size=16, max_iters=5, eval_interval=100, eval_iters=1, grad_accum=k,
                          precision="fp32")
        train(model, torch.optim.SGD(model.parameters(), lr=0.5), SimpleNamespace(train=data.train, val=data.val), cfg)
        models.append(model)
    worst = max((p - q).abs().max().item() for p, q in zip(models[0].parameters(), models[1].parameters()))
    assert worst < 1e-6, f"the weights differ by up to {worst:.2e}"
