"""A forward pass, recorded: what each module was called with and returned, and the calls inside it
to the functions attention, dropout and activations are made of (softmax, scaled_dot_product_attention,
dropout, relu...), each with the module it was called in.

Module calls come from forward hooks; function calls from a TorchFunctionMode, which sees every torch
function however it is spelt (F.softmax, torch.softmax, x.softmax, nn.Softmax), so that the grader can
look inside a learner's forward without asking it to be written one way.
"""

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

# The functions worth keeping: what attention, dropout and activations are made of.
FUNCTIONS = {"softmax", "scaled_dot_product_attention", "dropout", "masked_fill", "masked_fill_", "relu", "gelu",
             "silu", "tanh", "sigmoid", "leaky_relu", "elu", "embedding", "layer_norm", "cross_entropy",
             "multinomial", "argmax", "matmul", "einsum", "bmm"}
DROPOUTS = {"dropout"}


def kept(value):
    """A copy of value that later in-place changes can't alter: tensors cloned and detached."""
    if torch.is_tensor(value):
        return value.detach().clone()
    if isinstance(value, (tuple, list)):
        return type(value)(kept(v) for v in value)
    return value


@dataclass(eq=False)  # calls are compared by identity: their tensors can't be compared with ==
class Call:
    """One call: of a module (path is its name in the model, '' for the model itself) or of a function
    (fn is its name; path is the module it was called in)."""
    path: str
    args: tuple
    kwargs: dict
    out: object
    fn: str | None = None
    index: int = 0  # the how-many-th call of this module (or of this function in this module)

    @property
    def input(self):
        return self.args[0] if self.args else None

    def arg(self, position: int, name: str, default=None):
        if name in self.kwargs:
            return self.kwargs[name]
        return self.args[position] if len(self.args) > position else default


@dataclass
class Trace:
    calls: list = field(default_factory=list)  # in the order they returned: a module after the calls inside it
    started: set = field(default_factory=set)  # the paths of the modules called, whether or not they returned

    def modules(self, path: str) -> list[Call]:
        return [c for c in self.calls if c.fn is None and c.path == path]

    def functions(self, name: str, inside: str | None = None) -> list[Call]:
        """The calls of function name, in order; only those in module inside or below it, if given."""
        return [c for c in self.calls if c.fn == name and (inside is None or within(c.path, inside))]


def within(path: str, inside: str) -> bool:
    return inside == "" or path == inside or path.startswith(inside + ".")


class Recorder(TorchFunctionMode):
    """Records the calls of FUNCTIONS with the module they were made in; replace_dropout: dropout
    is recorded and then left out (its input returned as it is), so that a training-mode forward is
    the eval forward and each place dropout is applied can be told by its input's value."""

    def __init__(self, trace: Trace, stack: list, replace_dropout: bool = False):
        super().__init__()
        self.trace, self.stack, self.replace_dropout = trace, stack, replace_dropout

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if self.replace_dropout and name in DROPOUTS:
            out = args[0]
        elif self.replace_dropout and name == "scaled_dot_product_attention":
            out = func(*args, **{**kwargs, "dropout_p": 0.0})
        else:
            out = func(*args, **kwargs)
        if name in FUNCTIONS:
            path = self.stack[-1] if self.stack else ""
            index = sum(1 for c in self.trace.calls if c.fn == name and c.path == path)
            self.trace.calls.append(Call(path, kept(args), {k: kept(v) for k, v in kwargs.items()}, kept(out),
                                         fn=name, index=index))
        return out


def record(model: nn.Module, run, replace_dropout: bool = False) -> tuple[object, Trace]:
    """run() (which calls model) with every module of model and the functions inside them recorded:
    (what run returned, the trace). An exception from run() carries the trace so far (e.trace), and
    leaves the hooks removed."""
    trace, stack, handles = Trace(), [], []
    counts = {}

    def before(path):
        def hook(module, args, kwargs):
            stack.append(path)
            trace.started.add(path)
        return hook

    def after(path):
        def hook(module, args, kwargs, out):
            stack.pop()
            counts[path] = counts.get(path, 0) + 1
            trace.calls.append(Call(path, kept(args), {k: kept(v) for k, v in kwargs.items()},
                                    kept(out), index=counts[path] - 1))
        return hook

    for path, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(before(path), with_kwargs=True))
        handles.append(module.register_forward_hook(after(path), with_kwargs=True))
    try:
        with Recorder(trace, stack, replace_dropout):
            out = run()
    except Exception as e:
        e.trace = trace  # what was recorded before it: a diagnosis can walk as far as the forward got
        raise
    finally:
        for h in handles:
            h.remove()
    return out, trace
