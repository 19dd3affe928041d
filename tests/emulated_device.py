"""An accelerator emulated on the CPU, strict in the ways a real one is and a CPU is not.

Inside `emulated_mps()`, PyTorch sees an Apple GPU: `resolve_device("auto")` answers "mps", and
tensors moved there become `OnDevice` tensors (CPU memory underneath) that behave like MPS ones:
- float64 is refused, as MPS refuses it ("MPS framework doesn't support float64");
- an operation mixing an `OnDevice` tensor with a CPU tensor of more than one element fails, as on
  any GPU ("Expected all tensors to be on the same device"); a CPU scalar is allowed, as it is there;
- a CPU generator can't draw for a device tensor, and a device tensor has no `.numpy()`;
- `.cpu()` and `.to("cpu")` copy back, as on a GPU.
So a code path that forgets a move, keeps float64 on the device or samples with the wrong generator
fails here, on a CPU, the way it would on a Mac.
"""

from contextlib import contextmanager

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

FAKE = torch.device("mps")
DEVICE_GET, GRAD_GET = torch.Tensor.device.__get__, torch.Tensor.grad.__get__  # compared with ==: new each time
COPIES = {torch.Tensor.copy_, torch.Tensor.__setitem__, torch.Tensor.module_load}  # copies across, as on a real device
# (.to() and .cpu() are handled on their own, before the check that refuses mixed devices)


class OnDevice(torch.Tensor):
    """A tensor on the emulated accelerator: it says it is on the device; EmulatedDevice does the rest."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func == DEVICE_GET:
            return FAKE
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **(kwargs or {}))
        if func == GRAD_GET and out is not None:
            return on_device(out)
        return out

    def __deepcopy__(self, memo):
        """A copy on the device, as a device tensor's deepcopy gives (a model copied to time its steps)."""
        if id(self) not in memo:
            copy = on_device(to_host(self.detach()))  # a leaf, as the original
            with torch._C.DisableTorchFunction():
                memo[id(self)] = copy.requires_grad_(self.requires_grad)
        return memo[id(self)]


def is_fake(device) -> bool:
    return device is not None and torch.device(device).type == FAKE.type


def on_device(t: torch.Tensor) -> torch.Tensor:
    with torch._C.DisableTorchFunction():
        if t.dtype == torch.float64:
            raise TypeError("Cannot convert a MPS Tensor to float64 dtype as the MPS framework doesn't support "
                            "float64. Please use float32 instead.")
        return t.as_subclass(OnDevice)


def to_host(t: torch.Tensor) -> torch.Tensor:
    with torch._C.DisableTorchFunction():
        return t.as_subclass(torch.Tensor).clone()


def target_device(args, kwargs):
    """Where a Tensor.to(...) call sends its tensor, or None when it only changes the dtype."""
    if "device" in kwargs:
        return kwargs["device"]
    for a in args[1:]:
        if isinstance(a, (str, torch.device)):
            return a
        if isinstance(a, torch.Tensor):
            return a.device
    return None


class EmulatedDevice(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        leaves, _ = tree_flatten((args, kwargs))
        device_inputs = any(isinstance(t, OnDevice) for t in leaves)
        if func == DEVICE_GET or func == GRAD_GET:
            return func(*args, **kwargs)  # OnDevice answers these itself
        if func is torch.Tensor.numpy and device_inputs:
            raise TypeError("can't convert mps:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor "
                            "to host memory first.")
        if func is torch.Tensor.cpu:
            return to_host(args[0]) if isinstance(args[0], OnDevice) else func(*args, **kwargs)
        if func is torch.Tensor.to:
            where = target_device(args, kwargs)
            if where is not None:
                host_args = [("cpu" if isinstance(a, (str, torch.device)) else a) for a in args]
                if "device" in kwargs:
                    kwargs["device"] = "cpu"
                with torch._C.DisableTorchFunction():
                    out = func(*[to_host(a) if isinstance(a, OnDevice) else a for a in host_args], **kwargs)
                return on_device(out) if is_fake(where) else out
        generator = kwargs.get("generator")
        if device_inputs and generator is not None and generator.device.type != FAKE.type:
            raise RuntimeError(f"Expected a '{FAKE.type}' device type for generator but found '{generator.device.type}'")
        if func not in COPIES and device_inputs:
            host = [t for t in leaves if type(t) is torch.Tensor and t.dim() > 0]
            if host:
                raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, "
                                   f"mps:0 and cpu! ({getattr(func, '__name__', func)}, a CPU tensor of shape "
                                   f"{tuple(host[0].shape)})")
        create_on_device = is_fake(kwargs.get("device"))
        if create_on_device:
            kwargs["device"] = "cpu"
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **kwargs)
        if not (device_inputs or create_on_device):
            return out
        in_place = getattr(func, "__name__", "").endswith("_")
        return tree_map(lambda t: t if not isinstance(t, torch.Tensor) or in_place and t is args[0] or isinstance(t, OnDevice)
                        else on_device(t), out)


@contextmanager
def emulated_mps(monkeypatch):
    """Run the block as if this machine had an Apple GPU and no CUDA (see the module's docstring)."""
    import course.device

    monkeypatch.setattr(course.device, "mps_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    state = {"rng": torch.zeros(8, dtype=torch.uint8)}  # what torch.mps.get_rng_state() holds there
    monkeypatch.setattr(torch.mps, "get_rng_state", lambda *a: state["rng"].clone())
    monkeypatch.setattr(torch.mps, "set_rng_state", lambda s, *a: state.update(rng=s.clone()))
    monkeypatch.setattr(torch.mps, "synchronize", lambda: None)  # the CPU underneath has nothing queued
    swap = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)  # model.to() makes its parameters OnDevice
    try:
        with EmulatedDevice():
            yield
    finally:
        torch.__future__.set_swap_module_params_on_conversion(swap)
