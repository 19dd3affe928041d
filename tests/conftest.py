import math  # noqa: F401  (handy in assertions)
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from course.startup import choose_avx2  # noqa: E402

choose_avx2()  # the kernels the scripts run (course/startup.py), before any test computes anything

import pytest  # noqa: E402
import torch  # noqa: E402

from gpt.data import DEFAULT_PATH  # noqa: E402

SMALL_TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n\n"
) * 40


@pytest.fixture(autouse=True)
def _one_thread_and_seed():
    torch.set_num_threads(1)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def corpus_text() -> str:
    if not DEFAULT_PATH.exists():
        pytest.skip(f"Tiny Shakespeare is not at {DEFAULT_PATH} (run any task once to download it)")
    return DEFAULT_PATH.read_text(encoding="utf-8")


@pytest.fixture
def small_text_file(tmp_path) -> Path:
    path = tmp_path / "small.txt"
    path.write_text(SMALL_TEXT, encoding="utf-8")
    return path


@pytest.fixture
def run_log(monkeypatch):
    """Send the lines of the runs a test makes to log: run_log(log). (A run prints through
    course.run.print_flushed.)"""
    import course.run

    def to(log):
        monkeypatch.setattr(course.run, "print_flushed", lambda line="": log(line))
    return to
