"""What a run can be checked against: the course's numbers, and this repository's reference bands
(the final val loss of each task's default run over 3 seeds, measured by `python -m course.report`)."""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BANDS = ROOT / "assets" / "bands.json"

# Every step of the course, and its script.
SCRIPTS = {"task00": "task00_bigram.py", **{f"task0{i}": f"task0{i}.py" for i in range(1, 8)},
           "task08": "task08_infinite.py", "task09": "task09_rope.py"}
TRAINED = tuple(task for task in SCRIPTS if task != "task08")  # task 08 streams from task 07's or 09's model
LECTURE_SIZED = TRAINED[:7]  # tasks 00-06: seconds to a minute on a CPU, the course's own settings
SAVES_CHECKPOINTS = ("task07", "task09")


def script(task: str) -> str:
    return SCRIPTS[task]

# The val loss the course printed for each task, and the epoch it printed it at (the course reported
# tasks 01-05 at epoch 4500 and tasks 06-07 at the last evaluation, epoch 4999).
COURSE = {
    "task01": (4500, 2.4114),
    "task02": (4500, 2.3049),
    "task03": (4500, 2.2645),
    "task04": (4500, 2.2915),
    "task05": (4500, 2.0771),
    "task06": (4999, 2.0694),
    "task07": (4999, 1.4894),
}
COURSE_NOTES = {"task07": "its gpu preset, 10.8 M parameters, on a GPU"}


def bands() -> dict:
    """{task: {'mean', 'std', 'seeds', 'finals', 'epoch', 'wall_mean', 'command', ...}}, or {} if not measured."""
    if not BANDS.exists():
        return {}
    return json.loads(BANDS.read_text())


def band(task: str) -> dict | None:
    return bands().get(task)
