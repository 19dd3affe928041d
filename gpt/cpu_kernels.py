"""The same table on every x86 CPU: PyTorch's AVX2 kernels, asked for before torch is imported.

PyTorch picks its vectorised CPU kernels by what the processor has (AVX2 or AVX-512 on x86), and the
two round differently: the same seed printed a different loss table on an AVX-512 machine than on an
AVX2 one, and training amplifies the difference (RESEARCH_LOG.md, "2026-12-01: the same table on
every x86 CPU").
Every x86 CPU of the last decade has AVX2, so asking for it everywhere makes the tables agree.

Only on x86, only where the processor has AVX2 and FMA (PyTorch trusts the variable and would crash
on a CPU without them), and only when ATEN_CPU_CAPABILITY is not set already: set it yourself to
choose (`ATEN_CPU_CAPABILITY=avx512`), or set GPT_CPU_KERNELS=native to let PyTorch pick.
This module must not import torch: the variable is read once, when torch is first imported.
"""

import os
import platform
import subprocess
import sys

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
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.features", "machdep.cpu.leaf7_features"],
                                 capture_output=True, text=True, timeout=5).stdout
        except (OSError, subprocess.SubprocessError):
            return set()
        return {flag.lower() for flag in out.split()}
    return set()


def choose_avx2(environ=os.environ, machine: str | None = None, flags=None, torch_loaded: bool | None = None) -> bool:
    """Set ATEN_CPU_CAPABILITY=avx2 in environ where that is safe and wanted; returns whether it did."""
    torch_loaded = "torch" in sys.modules if torch_loaded is None else torch_loaded
    if VARIABLE in environ or environ.get(OPT_OUT, "").lower() == "native" or torch_loaded:
        return False  # chosen already, or too late: torch has read the variable
    if (machine or platform.machine()).lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False  # ARM (Apple silicon, Graviton) has other kernels; nothing to choose here
    flags = cpu_flags() if flags is None else flags
    if not {"avx2", "fma"} <= flags:
        return False
    environ[VARIABLE] = "avx2"
    return True
