"""Every fault ends cleanly: a mistake, a file that can't be written, Ctrl-C, SIGTERM or a closed
output ends a script with a short message that says what happened, what is safe and what to type
next; the right exit status (2, 130, 143, or 0 where stopping is the point); no traceback; and
nothing the user had lost or half-written. Signals are real ones, sent to a child process."""

import errno
import importlib
import io
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, SMALL_TEXT
from course.checkpoint import load_checkpoint
from course.config import GPTConfig
from course.interrupts import Terminated
from gpt.errors import UserError
from course.interrupts import signals_held
from course.exits import friendly_errors
from course.run import check_model

import task07
import task08_infinite
import task09_rope

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TERMINAL = dict(preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # Ctrl-C as in a terminal


def tiny(data, *more):
    """A run of task 07 that takes a second: two steps of a one-layer model of 16 channels."""
    return ["--preset", "cpu", "--data", str(data), "--max-iters", "2", "--eval-interval", "1", "--eval-iters", "1",
            "--final-eval-iters", "1", "--batch-size", "2", "--block-size", "8", "--n-embd", "16", "--n-head", "2",
            "--n-layer", "1", "--sample-tokens", "5", "--runs", "", "--device", "cpu", *more]


def tiny_cfg(data, **kw):
    return GPTConfig(**{**dict(data=str(data), max_iters=2, eval_interval=1, eval_iters=1, final_eval_iters=1,
                               batch_size=2, block_size=8, n_embd=16, n_head=2, n_layer=1, sample_tokens=5,
                               runs="", device="cpu"), **kw})


def child(*args, **kw):
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV, **kw)


def finish(proc, timeout=60):
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def temporary_files(folder):
    return [name for name in os.listdir(folder) if name.endswith(".tmp")]


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "small.txt"
    path.write_text(SMALL_TEXT, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def saved(tmp_path_factory, text):
    """A checkpoint of task 07's tiny run, trained to iteration 2."""
    path = tmp_path_factory.mktemp("saved") / "task07.pt"
    task07.train_gpt(tiny_cfg(text, checkpoint=str(path)), quiet=True)
    return path


# 1. A checkpoint write that fails (a full disk)

@pytest.mark.slow  # a process started per test, signalled or cut off: seconds each
def test_a_full_disk_during_a_save_says_the_last_checkpoint_is_safe_and_how_to_resume(tmp_path, text, saved):
    ckpt = tmp_path / "task07.pt"
    shutil.copy(saved, ckpt)
    before = ckpt.read_bytes()
    limit = len(before) // 2  # the next save can't be written whole: like a disk that fills up

    def small_files():
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    proc = child("task07.py", *tiny(text, "--max-iters", "4", "--checkpoint", str(ckpt), "--resume"),
                 preexec_fn=small_files)
    out, err = finish(proc)
    assert proc.returncode == 2, err
    assert "Traceback" not in err and "enforce fail" not in err, err
    assert f"could not write {ckpt}" in err and "it is as it was" in err, err
    assert f"The model as of iteration 2 is in {ckpt}; continue with --resume: python task07.py" in err, err
    assert ckpt.read_bytes() == before, "the previous checkpoint is intact"
    assert temporary_files(tmp_path) == [], "no half-written file is left"


# 2. Ctrl-C during start-up

def test_ctrl_c_while_torch_loads_ends_with_a_line_and_status_130(tmp_path, text):
    proc = child("task07.py", *tiny(text, "--checkpoint", ""), **TERMINAL)
    time.sleep(0.4)  # course is imported, torch is still loading
    proc.send_signal(signal.SIGINT)
    out, err = finish(proc)
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    assert "interrupted while starting up: nothing was trained or written" in err, err


@pytest.mark.slow
def test_ctrl_c_at_any_moment_of_the_first_seconds_ends_with_one_line_and_status_130(tmp_path, text):
    """16 starts of python task07.py, Ctrl-C 0.1 s to 2.4 s after the script's first line runs (torch
    loading, the settings, the data, the model, the optimizer, the first steps), no retries: every one
    ends with status 130 and one line saying it was interrupted; never a traceback, an abort (C++'s
    "terminate called", status 134) or a run that trains on. (Before its first line, Python is still
    starting: nothing of the script's can act there.)"""
    args = tiny(text, "--checkpoint", "", "--max-iters", "100000", "--eval-interval", "1000")
    for delay in [0.1 + 2.3 * i / 15 for i in range(16)]:
        proc = child("task07.py", *args, **TERMINAL)
        first = proc.stderr.readline()  # the script's first line, printed before it imports torch
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, err = finish(proc)
        said = [line for line in err.splitlines() if line.strip()]
        assert first.startswith("task07.py: starting"), first
        assert proc.returncode == 130, f"after {delay:.2f} s: status {proc.returncode}\n{err}"
        assert len(said) == 1 and said[0].startswith("interrupted"), f"after {delay:.2f} s:\n{err}"
        assert "Traceback" not in err and "terminate called" not in err


# 3. Task 08 with standard output closed

def test_task08_with_standard_output_closed_says_so_and_exits_0(saved, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdout", None)  # what Python gives a script started with >&-
    assert task08_infinite.main(["--checkpoint", str(saved), "--device", "cpu", "--max-new-tokens", "5"]) == 0
    assert "standard output is closed, so there is nowhere to stream to" in capsys.readouterr().err


def test_task08_on_a_full_disk_says_so_instead_of_a_traceback(saved, capsys):
    class FullDisk(io.StringIO):
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(SystemExit) as exit_info:
        task08_infinite.main(["--checkpoint", str(saved), "--device", "cpu", "--max-new-tokens", "5"], out=FullDisk())
    assert exit_info.value.code == 2
    assert "could not write the stream to standard output: the disk is full" in capsys.readouterr().err


def test_sigterm_ends_task08s_stream_with_its_line_finished_and_status_143(saved, monkeypatch, capsys):
    def stream_then_sigterm(*args, **kwargs):
        yield from (1, 2, 3)
        raise Terminated

    monkeypatch.setattr(task08_infinite, "stream", stream_then_sigterm)
    out = io.StringIO()
    with pytest.raises(SystemExit) as exit_info:
        task08_infinite.main(["--checkpoint", str(saved), "--device", "cpu"], out=out)
    assert exit_info.value.code == 143
    assert out.getvalue().endswith("\n") and "stopped by SIGTERM" in capsys.readouterr().err


# 4. Every arm of --compare (and every trial of a grid) is checked before any trains

def no_training(*args, **kwargs):
    raise AssertionError("an arm trained before every arm was checked")


def test_compare_refuses_an_arm_the_model_cant_make_before_any_training(monkeypatch, capsys):
    monkeypatch.setattr(task09_rope, "train_gpt", no_training)
    with pytest.raises(SystemExit) as exit_info:
        task09_rope.main(["--compare", "n_head=3"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "arm B of --compare n_head=3 can't be trained: n_embd (128) must be divisible by n_head (3)" in err, err


def test_a_grid_refuses_a_trial_the_model_cant_make_before_the_first_trial(monkeypatch, capsys):
    monkeypatch.setattr("course.search.run_trials", lambda *a, **k: pytest.fail("a trial ran before every trial was checked"))
    with pytest.raises(SystemExit) as exit_info:
        task07.main(["--preset", "cpu", "--n-embd", "16", "--n-head", "2", "3"])
    assert exit_info.value.code == 2
    assert "trial 1 can't be trained: n_embd (16) must be divisible by n_head (3)" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    ("n_head=4", "this run has n_head=4 already, so B would be A"),
    ("tie_weights=maybe", "tie_weights is true or false (got maybe)"),
])
def test_compare_refuses_an_arm_b_that_is_a_or_a_value_that_isnt_one(change, message, monkeypatch, capsys):
    monkeypatch.setattr(task09_rope, "train_gpt", no_training)
    with pytest.raises(SystemExit) as exit_info:
        task09_rope.main(["--compare", change])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_checking_a_model_draws_no_random_numbers():
    before = torch.get_rng_state()
    check_model(task07.build_model, GPTConfig(n_embd=16, n_head=2, n_layer=1))
    assert torch.equal(before, torch.get_rng_state()), "the same seed must still give the same run"


# 5. SIGTERM: like Ctrl-C, and never a half-written file

@pytest.mark.slow  # a process started per test, signalled or cut off: seconds each
def test_sigterm_during_training_says_where_the_checkpoint_is_and_exits_143(tmp_path, text):
    ckpt = tmp_path / "task07.pt"
    proc = child("task07.py", *tiny(text, "--max-iters", "100000", "--eval-interval", "2", "--checkpoint", str(ckpt)))
    for line in proc.stdout:  # a checkpoint has been written
        if line.startswith("Epoch 4:"):
            break
    proc.send_signal(signal.SIGTERM)
    out, err = finish(proc)
    assert proc.returncode == 143, err
    assert "Traceback" not in err, err
    said = re.search(rf"stopped by SIGTERM: the model as of iteration (\d+) is in {re.escape(str(ckpt))}; "
                     rf"continue with --resume: python task07.py .*--resume$", err.strip())
    assert said, err
    assert int(said.group(1)) == load_checkpoint(ckpt)["state"]["iter"] >= 4, "the message names what is saved"
    assert temporary_files(tmp_path) == []


SAVE_INTERRUPTED = """
import sys, time, torch
from course.checkpoint import save_checkpoint
from course.exits import friendly_errors
path = sys.argv[1]
save_checkpoint(path, {"n": torch.ones(3)})
real_save = torch.save
def slow_save(obj, f, *args, **kwargs):
    f.write(b"PK half a checkpoint")
    print("mid-save", flush=True)
    time.sleep(30)
    real_save(obj, f, *args, **kwargs)
torch.save = slow_save
with friendly_errors():  # as every script runs its work
    save_checkpoint(path, {"n": torch.zeros(3)})
print("finished")
"""


@pytest.mark.slow  # a process started per test, signalled or cut off: seconds each
def test_sigterm_in_the_middle_of_a_save_leaves_the_old_checkpoint_and_no_temporary_file(tmp_path):
    path = tmp_path / "model.pt"
    proc = child("-c", SAVE_INTERRUPTED, str(path))  # no handler of its own: SIGTERM as it comes
    assert proc.stdout.readline() == "mid-save\n"
    proc.send_signal(signal.SIGTERM)
    out, err = finish(proc)
    assert os.listdir(tmp_path) == ["model.pt"], "the temporary file must be removed"
    assert proc.returncode == 143, err
    assert "finished" not in out and "Traceback" not in err, err
    assert torch.equal(load_checkpoint(path)["n"], torch.ones(3)), "the previous checkpoint is intact"


def test_ctrl_c_during_a_save_names_the_iteration_the_checkpoint_really_holds(tmp_path, text, monkeypatch, capsys):
    from course import checkpoint

    saves = []
    real_save = checkpoint.save_checkpoint

    def save_then_interrupt(path, payload):
        saves.append(payload["state"]["iter"])
        if len(saves) == 3:  # the evaluation at iteration 2: its model never reaches the disk
            raise KeyboardInterrupt
        real_save(path, payload)

    monkeypatch.setattr(checkpoint, "save_checkpoint", save_then_interrupt)  # what SaveCheckpoints calls
    ckpt = tmp_path / "task07.pt"
    with pytest.raises(SystemExit) as exit_info:
        task07.main(tiny(text, "--checkpoint", str(ckpt)))
    assert exit_info.value.code == 130
    assert saves == [0, 1, 2], "the interrupt came in the third save, at iteration 2"
    assert f"interrupted: the model as of iteration 1 is in {ckpt}" in capsys.readouterr().err
    assert load_checkpoint(ckpt)["state"]["iter"] == 1


def test_a_stop_outside_training_still_says_what_the_checkpoint_holds(saved, capsys):
    for stop, status, said in ((KeyboardInterrupt, 130, "interrupted"), (Terminated, 143, "stopped by SIGTERM")):
        with pytest.raises(SystemExit) as exit_info:
            with friendly_errors(checkpoint=str(saved)):
                raise stop
        assert exit_info.value.code == status
        assert f"{said}: the model as of iteration 2 is in {saved}; continue with --resume" in capsys.readouterr().err


def test_ctrl_c_waits_for_the_end_of_a_held_block_then_acts():
    # Ctrl-C as Python answers it in a terminal, even where pytest was started with it ignored (a
    # background job, nohup): the block must hold the signal back, then act as the handler would
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    reached_the_end = False
    try:
        with pytest.raises(KeyboardInterrupt):
            with signals_held():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # long enough for Python to run the handler
                reached_the_end = True
    finally:
        signal.signal(signal.SIGINT, previous)
    assert reached_the_end, "the block must run whole"


@pytest.mark.slow  # a process started per test, signalled or cut off: seconds each
def test_a_closed_pipe_ends_a_script_quietly_with_status_0(text):
    proc = child("task07.py", *tiny(text, "--checkpoint", ""))
    proc.stdout.close()  # the reader went away before the first line (| head -0)
    out, err = finish(proc)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, err
    assert "stopped: the program reading the output (a pipe, such as | head) closed it" in err, err


def test_a_closed_pipe_during_training_says_what_the_checkpoint_holds(run_log, tmp_path, text, capsys):
    def reader_gone_at_epoch_1(line):
        if line.startswith("Epoch 1:"):
            raise BrokenPipeError

    ckpt = tmp_path / "task07.pt"
    with pytest.raises(SystemExit) as exit_info, friendly_errors(checkpoint=str(ckpt)):  # as task07.main runs it
        run_log(reader_gone_at_epoch_1)
        task07.train_gpt(tiny_cfg(text, checkpoint=str(ckpt)))
    assert exit_info.value.code == 0
    assert f"closed it: the model as of iteration 1 is in {ckpt}; continue with --resume" in capsys.readouterr().err


# 6. Messages that mislead

class NotAModel:
    pass


@pytest.mark.parametrize("content", ["random", "cut short", "another program's pickle"])
def test_a_corrupt_checkpoint_says_what_it_is_and_not_pytorchs_advice(tmp_path, saved, content):
    path = tmp_path / "bad.pt"
    if content == "random":
        path.write_bytes(os.urandom(4096))
    elif content == "cut short":
        path.write_bytes(saved.read_bytes()[:3000])
    else:
        torch.save({"model": NotAModel()}, path)
    with pytest.raises(UserError) as error:
        load_checkpoint(path, what_to_do="Pass --checkpoint PATH.")
    message = str(error.value)
    assert "weights_only" not in message and "issue" not in message.lower(), message
    assert "not a readable checkpoint: it is not a file this project wrote, or it was cut short" in message
    assert message.endswith("\nPass --checkpoint PATH.")


@pytest.mark.parametrize("what, said, not_said", [
    ("missing", "no checkpoint at", None),
    ("notes", "is not a readable checkpoint", "Train one first"),
    ("folder", "is a folder, not a checkpoint file; it holds task07.pt: give one of them, e.g. --checkpoint",
     "Train one first"),
])
def test_task08_says_how_to_make_a_checkpoint_only_when_there_is_none(tmp_path, saved, capsys, what, said, not_said):
    if what == "notes":
        (tmp_path / "notes.txt").write_text("my notes")
        path = tmp_path / "notes.txt"
    elif what == "folder":
        shutil.copy(saved, tmp_path / "task07.pt")
        path = tmp_path
    else:
        path = tmp_path / "none.pt"
    with pytest.raises(SystemExit) as exit_info:
        task08_infinite.main(["--checkpoint", str(path), "--device", "cpu"], out=io.StringIO())
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert said in err, err
    assert not_said is None or not_said not in err, err
    if what == "missing":
        assert "Train one first: python task07.py" in err
    if what == "notes":
        assert f"python task07.py --checkpoint {path} --overwrite" in err


def test_a_checkpoint_path_naming_a_folder_or_a_users_file_is_not_said_to_hold_a_model(tmp_path, text):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    with pytest.raises(UserError) as folder:
        task07.train_gpt(tiny_cfg(text, checkpoint=str(tmp_path)))
    assert "is a folder, not a file" in str(folder.value) and "already holds" not in str(folder.value)
    with pytest.raises(UserError) as users_file:
        task07.train_gpt(tiny_cfg(text, checkpoint=str(notes)))
    message = str(users_file.value)
    assert "already holds a model" not in message and "is not a readable checkpoint" in message, message
    assert "This run would replace it" in message and "--overwrite" in message
    assert notes.read_text() == "my notes"


@pytest.mark.parametrize("flag, setting", [("--checkpoint", "checkpoint"), ("--runs", "runs")])
def test_an_output_path_under_a_regular_file_is_refused_before_anything_runs(tmp_path, flag, setting):
    afile = tmp_path / "afile.txt"
    afile.write_text("")
    value = str(afile / "sub" / "task07.pt")
    cfg = tiny_cfg(tmp_path / "no data here.txt", **{"checkpoint": "", setting: value})
    with pytest.raises(UserError) as error:  # before the data is read: that would fail too
        task07.train_gpt(cfg)
    assert str(error.value) == (f"{flag} {value}: {afile} is a file, not a folder, so nothing can be saved under "
                                f"it; choose another path")


def test_resuming_with_other_settings_names_the_flags_to_pass(saved, text, capsys):
    with pytest.raises(SystemExit) as exit_info:
        task07.main(tiny(text, "--checkpoint", str(saved), "--resume", "--n-layer", "2", "--n-embd", "32"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "{" not in err, err
    assert "(n_embd=32, n_layer=2 here). To continue it, pass --n-embd 16 --n-layer 1" in err, err


def test_resuming_another_tasks_checkpoint_names_the_script_that_continues_it(saved, text, capsys):
    with pytest.raises(SystemExit):
        task09_rope.main(tiny(text, "--checkpoint", str(saved), "--resume")[2:])  # task 09 has no --preset
    assert f"holds task07's model (a GPT), which this script can't continue: python task07.py --checkpoint {saved} " \
           f"--resume" in capsys.readouterr().err


@pytest.mark.parametrize("task, flags, said", [
    ("task01", ["--n-head", "4"], "has no --n-head: it has one head of attention. Multi-head attention comes in "
                                "task 02: python task02.py --n-head 4"),
    ("task03", ["--n-layer", "2"], "has no --n-layer: it has one block. Blocks stacked n_layer deep come in task 04: "
                                   "python task04.py --n-layer 2"),
    ("task06", ["--dropout", "0.1"], "has no --dropout: it trains without dropout. Dropout, a schedule, checkpoints "
                                     "and subword tokens come in task 07: python task07.py --dropout 0.1"),
    ("task01", ["--n-embed", "8"], "has no --n-embed; did you mean --n-embd?"),
])
def test_a_flag_of_a_later_task_says_which_task_has_it(task, flags, said, capsys):
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(task).main(flags)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert said in err, err
    assert "usage:" not in err and len(err.splitlines()) <= 3, err


def test_a_bad_value_gets_one_line_and_where_the_settings_are_not_the_whole_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        task07.main(["--batch-size", "x"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --batch-size: invalid int value: 'x'" in err and "--help lists every setting" in err
    assert "usage:" not in err and len(err.splitlines()) == 2, err


def test_every_script_imports_course_before_gpt_and_torch():
    """course makes a Ctrl-C while torch loads end quietly (course/startup.py, course/interrupts.py): a
    script must import it before anything that loads torch."""
    for path in sorted(ROOT.glob("*.py")):
        imports = re.findall(r"^(?:from|import) (\w+)", path.read_text(), re.M)
        ours = [name for name in imports if name in ("course", "gpt", "torch")]
        assert not ours or ours[0] == "course", f"{path.name} imports {ours[0]} before course"


CUT_IN_HALF = """
import os, signal
from course.exits import friendly_errors
from course.interrupts import install_outside_a_run

install_outside_a_run()  # what course/startup.py does for a script of this repository

def an_import_that_ctrl_c_cuts_in_half():  # as numpy's lazy imports do: the KeyboardInterrupt is lost
    try:
        os.kill(os.getpid(), signal.SIGINT)
    except KeyboardInterrupt:
        pass
    raise RecursionError("maximum recursion depth exceeded")

if os.environ.get("INSIDE") == "1":
    with friendly_errors(checkpoint=os.environ["CKPT"]):
        an_import_that_ctrl_c_cuts_in_half()
else:
    an_import_that_ctrl_c_cuts_in_half()
"""


@pytest.mark.slow  # a process started per test, signalled or cut off: seconds each
@pytest.mark.parametrize("inside", ["1", "0"])
def test_an_error_that_a_ctrl_c_caused_ends_like_the_ctrl_c(inside, tmp_path):
    """Ctrl-C in the middle of an import (torch loads its compiler lazily when the optimizer is made) can
    leave a module half imported, which then fails with an error of its own instead of KeyboardInterrupt."""
    proc = subprocess.run([sys.executable, "-c", CUT_IN_HALF], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "INSIDE": inside, "CKPT": str(tmp_path / "model.pt")})
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr
    assert "interrupted" in proc.stderr
    if inside == "0":  # outside a run, the Ctrl-C ends the process where it comes: no error can follow it
        assert "interrupted while starting up: nothing was trained or written" in proc.stderr, proc.stderr
    if inside == "1":  # the run's own handler said it, with what its checkpoint holds
        assert f"no model was saved in {tmp_path / 'model.pt'}" in proc.stderr, proc.stderr
