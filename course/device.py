"""Where a run computes and in what precision: the device (cuda, mps or cpu), the autocast dtype that
device runs natively, the device's random state, and batches moved onto it.

Precision, as each device does it natively:
- CUDA from Ampere on (sm_80+: A100, H100, RTX 30xx/40xx): bf16 autocast, which has fp32's range and
  needs no loss scaling, on the bf16 tensor cores and flash attention.
- older CUDA GPUs (T4, V100: no bf16 in hardware; PyTorch would emulate it slowly): fp16 autocast with
  a gradient scaler, which multiplies the loss so that small fp16 gradients don't round to zero.
- MPS (Apple GPUs): fp32. MPS autocast exists only in recent PyTorch and macOS releases, bf16 needs
  macOS 14, and fp32 keeps the table comparable with a CPU's; --precision fp16 tries it there.
- CPU: fp32. The course's numbers are fp32; bf16 autocast on a CPU changes the table.
"""

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from gpt.errors import UserError

DEVICES = ("auto", "cuda", "mps", "cpu")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(name: str) -> str:
    """'auto' picks cuda, then mps, then cpu; an explicit device must exist."""
    if name not in DEVICES:
        raise UserError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if mps_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but PyTorch sees no CUDA GPU; use --device cpu or auto")
    if name == "mps" and not mps_available():
        raise UserError("--device mps was asked for, but this PyTorch has no MPS support; use --device cpu or auto")
    return name


def describe_device(device: str) -> str:
    """The device as a run's first lines show it, e.g. 'cuda (NVIDIA T4, sm_75)' or 'cpu (AVX2 kernels)'."""
    if device == "cuda":
        major, minor = torch.cuda.get_device_capability()
        return f"cuda ({torch.cuda.get_device_name()}, sm_{major}{minor})"
    if device == "mps":
        return "mps (Apple GPU)"
    return f"cpu ({torch.backends.cpu.get_cpu_capability()} kernels)"


def cuda_has_native_bf16() -> bool:
    """bf16 in the GPU's hardware (Ampere, sm_80, and later). is_bf16_supported() alone also answers
    True where PyTorch emulates bf16 (a T4, sm_75), which is slow and has no flash attention."""
    return torch.cuda.is_bf16_supported(including_emulation=False)


@dataclass(frozen=True)
class Precision:
    """How forward passes run: fp32, or under autocast to bf16 or fp16 (with a gradient scaler)."""
    name: str  # fp32, bf16 or fp16
    device: str
    why: str

    @property
    def dtype(self) -> torch.dtype | None:
        return DTYPES[self.name]

    def autocast(self):
        """The context every forward pass of the run goes through: training, evaluations and measures."""
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device, dtype=self.dtype)

    def grad_scaler(self):
        """fp16 gradients underflow without loss scaling; bf16 and fp32 need none: their scaler is
        switched off, and its scale, step and update are then loss.backward() and optimizer.step()."""
        return torch.amp.GradScaler(self.device, enabled=self.name == "fp16")


def choose_precision(device: str, asked: str = "auto") -> Precision:
    """What the device runs natively (see the module's docstring), unless --precision asks otherwise."""
    if asked not in PRECISIONS:
        raise UserError(f"unknown precision {asked!r}; choose one of {', '.join(PRECISIONS)}")
    if asked != "auto":
        if asked == "bf16" and device == "cuda" and not cuda_has_native_bf16():
            raise UserError(f"--precision bf16: {describe_device(device)} has no bf16 in hardware (PyTorch would "
                            f"emulate it, slowly); use --precision fp16 or fp32")
        return Precision(asked, device, "asked for with --precision")
    if device == "cuda":
        if cuda_has_native_bf16():
            return Precision("bf16", device, "the GPU has bf16 tensor cores")
        return Precision("fp16", device, "the GPU has no bf16 in hardware: fp16 autocast with a gradient scaler")
    if device == "mps":
        return Precision("fp32", device, "MPS: fp32, the precision every MPS release runs; --precision fp16 to try autocast")
    return Precision("fp32", device, "a CPU: fp32, the course's precision")


def device_rng_state(device: str) -> torch.Tensor | None:
    """The random state of the device's own generator (dropout on a GPU draws from it), or None on a CPU,
    whose state torch.get_rng_state() already holds."""
    if device == "cuda":
        return torch.cuda.get_rng_state()
    if device == "mps":
        return torch.mps.get_rng_state()
    return None


def synchronize(device: str) -> None:
    """Wait for the work queued on the device to finish (a GPU runs asynchronously): before reading a clock."""
    if device == "cuda":
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def set_device_rng_state(device: str, state: torch.Tensor) -> None:
    if device == "cuda":
        torch.cuda.set_rng_state(state)
    elif device == "mps":
        torch.mps.set_rng_state(state)


def pinned(batches, device: str):
    """batches(state) -> (x, y), delivered onto a CUDA GPU through pinned memory, so that the copy is
    asynchronous and the CPU can queue the next step while the GPU runs this one (from pageable
    memory non_blocking does nothing). Elsewhere batches as they are."""
    if device != "cuda":
        return batches

    def on_the_gpu(state):
        x, y = batches(state)
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return on_the_gpu


class Autocast(torch.nn.Module):
    """model, with every forward pass (training's, the evaluations', the measures') in the precision
    given: what the loop trains and evaluates when a device runs bf16 or fp16 natively. The model
    itself is what is saved."""

    def __init__(self, model, precision: Precision):
        super().__init__()
        self.model, self.precision = model, precision
        self.block_size = model.block_size

    def forward(self, *args, **kwargs):
        with self.precision.autocast():
            return self.model(*args, **kwargs)
