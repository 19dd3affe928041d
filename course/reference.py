"""What a run can be checked against: the course's numbers, and this repository's reference bands
(the final val loss of each task's default run over 3 seeds, measured by `python -m course.report`).

Bands are kept per kind of hardware (`hardware`): the same seed prints a slightly different table on
another kind of CPU kernel, on a GPU or in another precision, so a run is checked against the band
of its own kind where one was measured, and says so where it falls back on another's.
"""

import json
import platform
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


# The val loss the course printed for each task (the output shown in Karpathy's lecture, "Let's build
# GPT: from scratch, in code, spelled out."), and the epoch it printed it at: tasks 01-05 at epoch
# 4500, tasks 06-07 at the last evaluation, epoch 4999.
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
REFERENCE_HARDWARE = "x86 CPU, AVX2 kernels, fp32"  # where the committed bands were measured
X86 = ("x86_64", "amd64", "i686", "x86")


def hardware(device: str, precision: str = "fp32") -> str:
    """The kind of hardware a run's numbers belong to, e.g. 'x86 CPU, AVX2 kernels, fp32' or 'cuda, bf16'."""
    if device != "cpu":
        return f"{device}, {precision}"
    import torch

    machine = platform.machine().lower()
    arch = "x86" if machine in X86 else "ARM" if machine in ("arm64", "aarch64") else machine
    return f"{arch} CPU, {torch.backends.cpu.get_cpu_capability()} kernels, {precision}"


def normal_width(band: dict) -> float:
    """How far from its band's mean a run's final val loss may land and still be normal: 3 standard
    deviations over the band's seeds, or 0.01, whichever is wider (seeds alone differ that much)."""
    return max(3 * band["std"], 0.01)


def all_bands() -> dict:
    """{hardware: {task: {'mean', 'std', 'seeds', 'finals', 'epoch', 'wall_mean', 'command', ...}}}."""
    if not BANDS.exists():
        return {}
    return json.loads(BANDS.read_text())


def band(task: str, where: str = REFERENCE_HARDWARE) -> tuple[dict | None, str]:
    """The band of task measured on the hardware `where`, else the committed reference's; and the
    hardware it was measured on ('' if there is none)."""
    measured = all_bands()
    for kind in (where, REFERENCE_HARDWARE):
        if task in measured.get(kind, {}):
            return measured[kind][task], kind
    return None, ""
