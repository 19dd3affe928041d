"""What a program this repository starts does first, when it imports `course` (every script imports
it before gpt, and so before PyTorch loads):

- it says that it is starting, since loading PyTorch takes seconds, longer on the first start after
  installing it, when nothing else would be printed;
- Ctrl-C or SIGTERM while it starts ends it with one line and status 130 (143), nothing written
  (course/interrupts.py);
- on x86 it asks PyTorch for its AVX2 kernels, so that the same seed prints the same table on the
  x86 CPUs measured (docs/devices.md). PyTorch picks its vectorised CPU kernels by what the processor has (AVX2 or AVX-512), and
  the two round differently, which training amplifies (RESEARCH_LOG.md, "2026-12-01: the same table on
  every x86 CPU"). Only where the processor has AVX2 and FMA (PyTorch trusts the variable and would
  crash on a CPU without them), and only when ATEN_CPU_CAPABILITY is not set already: set it yourself
  to choose (`ATEN_CPU_CAPABILITY=avx512`), or GPT_CPU_KERNELS=native to let PyTorch pick. PyTorch
  reads the variable once, at its first computation on the CPU.

Only for the programs this repository starts: a script in its folder (python task07.py) or python -m
course.X. A notebook, pytest or a program elsewhere that imports course gets none of it, and nothing
here imports torch.
"""

import os
import sys

from .interrupts import install_outside_a_run

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))  # os.path, not pathlib: this runs first, so it is kept light

VARIABLE = "ATEN_CPU_CAPABILITY"
OPT_OUT = "GPT_CPU_KERNELS"  # =native: leave the choice to PyTorch


def cpu_flags() -> set[str]:
    """The processor's feature flags, lower case, where the system tells them (Linux, macOS), else none."""
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("flags"):
                        return set(line.split(":", 1)[1].split())
        except OSError:
            return set()
    if sys.platform == "darwin":
        import subprocess

        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.features", "machdep.cpu.leaf7_features"],
                                 capture_output=True, text=True, timeout=5).stdout
        except (OSError, subprocess.SubprocessError):
            return set()
        return {flag.lower() for flag in out.split()}
    return set()


def choose_avx2(environ=os.environ, machine: str | None = None, flags=None) -> bool:
    """Set ATEN_CPU_CAPABILITY=avx2 in environ where that is safe and wanted; returns whether it did."""
    if VARIABLE in environ or environ.get(OPT_OUT, "").lower() == "native":
        return False  # chosen already
    import platform

    if (machine or platform.machine()).lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False  # ARM (Apple silicon, Graviton) has other kernels; nothing to choose here
    flags = cpu_flags() if flags is None else flags
    if not {"avx2", "fma"} <= flags:
        return False
    environ[VARIABLE] = "avx2"
    return True


def started_program(argv=None, main_file=None) -> str | None:
    """The command of the program that is starting, if it is one of this repository's: a script in
    its folder ('task07.py') or 'python -m course.X'; None otherwise (a notebook, pytest, a program
    elsewhere)."""
    argv = list(sys.orig_argv if argv is None else argv)
    if "-m" in argv[:-1] and argv[argv.index("-m") + 1].startswith("course."):
        return f"python -m {argv[argv.index('-m') + 1]}"
    if main_file is None:
        main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file and main_file.endswith(".py") and os.path.dirname(os.path.realpath(main_file)) == ROOT:
        return os.path.basename(main_file)
    return None  # not a script file of this repository ("<stdin>" for python -, say)


def prepare_process() -> None:
    """What a program of this repository does before anything imports torch (see the module's
    docstring); nothing for any other program."""
    program = started_program()
    if program is None:
        return
    install_outside_a_run()  # first: from here on, Ctrl-C ends the program with one line
    print(f"{program}: starting (loading PyTorch: seconds, longer on the first start after installing it)",
          file=sys.stderr, flush=True)
    choose_avx2()


if __name__ == "__main__":  # python -m course.startup: the kernels PyTorch runs for this repository's scripts here
    import torch

    print(torch.backends.cpu.get_cpu_capability())
