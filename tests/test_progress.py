"""What a learner sees in a real terminal: the progress bar never garbles the course's table."""

import fcntl
import os
import pty
import struct
import sys
import termios

import pytest

from conftest import ROOT


def run_in_a_terminal(cmd: list[str], columns: int = 100) -> str:
    """Everything cmd writes to a pseudo-terminal of this width, stdout and stderr together, as a terminal gets it."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: its stdout and stderr are the terminal
        os.chdir(ROOT)
        os.execvpe(cmd[0], cmd, {**os.environ, "COLUMNS": str(columns), "OMP_NUM_THREADS": "1"})
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, columns, 0, 0))
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child has closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.waitpid(pid, 0)
    return out.decode(errors="replace")


@pytest.mark.slow  # a process started per test, signalled or cut off: seconds each
@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_in_a_100_column_terminal_every_table_line_starts_at_the_beginning_of_a_line(small_text_file):
    out = run_in_a_terminal([sys.executable, "task07.py", "--data", str(small_text_file), "--n-layer", "1",
                             "--n-embd", "16", "--n-head", "2", "--block-size", "16", "--batch-size", "4",
                             "--max-iters", "60", "--eval-interval", "20", "--eval-iters", "2",
                             "--final-eval-iters", "2", "--checkpoint", "", "--runs", "", "--sample-tokens", "5"])
    assert "it/s" in out or "s/it" in out, "the progress bar was drawn (else this proves nothing)"
    table = [line for line in out.split("\n") if "Epoch " in line]
    assert len(table) == 4, out
    for line in table:
        shown = line.rstrip("\r").split("\r")[-1]  # what stays on the screen: the text after the last carriage return
        assert shown.startswith("Epoch "), f"a table line was printed onto the bar: {line!r}"
    assert "final evaluation, 2 batches per split" in out, "the final evaluation shows that it is running"


def test_the_config_a_run_prints_fits_the_terminal_and_leaves_out_what_it_does_not_use():
    import dataclasses

    from course.config import describe
    from course.presets import TASK07, TASK09

    cpu = describe(TASK07["cpu"])
    assert all(len(line) <= 100 for line in cpu.splitlines()) and cpu.startswith("config: data=")
    assert "vocab_size" not in cpu and "time_budget" not in cpu, "a character model has no BPE vocabulary to size"
    assert "warmup" not in describe(TASK07["gpu"]), "a constant learning rate has no warmup"
    assert "vocab_size=512" in describe(dataclasses.replace(TASK07["cpu"], tokenizer="bpe"))
    assert "muon_lr" not in describe(TASK09) and "muon_lr=0.02" in describe(dataclasses.replace(TASK09, optimizer="muon"))
