"""What every check works on: a step's model built twice by the task's own build_model, small, from the
lesson's classes and from the learner's (the same seed); the lesson's weights copied into the
learner's, matched by what they are (weights.py); and an error in the learner's code turned into a
failed check that names their line and, where it can, says why."""

import contextlib
import dataclasses
import importlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..reference import script
from .attention import tensor_of
from .diagnosis import departure, learner_error, length_finding
from .differences import close
from .results import CheckFailed, Finding
from .steps import STEPS
from .weights import Mismatch, plans

V, B = 17, 3  # a small vocabulary and batch for the checks


@contextlib.contextmanager
def replaced(modules, names: dict):
    """The learner's classes in place of the lesson's in these modules, for the length of a check."""
    saved = [(m, n, getattr(m, n)) for m in modules for n in names if hasattr(m, n)]
    for m, n, _ in saved:
        setattr(m, n, names[n])
    try:
        yield
    finally:
        for m, n, value in saved:
            setattr(m, n, value)


class Names:
    """The learner's names where the step has them, the lesson's module's otherwise."""

    def __init__(self, mine: dict, lesson):
        self.mine, self.lesson = mine, lesson

    def __getattr__(self, name):
        return self.mine[name] if name in self.mine else getattr(self.lesson, name)


def small_config(task):
    cfg = getattr(task, "CONFIG", None)
    if cfg is None:  # tasks 07 and 09 start from a preset: made small, four heads of 8, two layers
        from ..presets import TASK07, TASK09
        cfg = TASK09 if task.__name__.startswith("task09") else TASK07["cpu"]
        cfg = dataclasses.replace(cfg, n_embd=32, n_head=4, n_layer=2, block_size=16, dropout=0.0)
    return cfg


def distinct(model: nn.Module) -> nn.Module:
    """model with every weight drawn afresh, large enough that each part of the arithmetic shows in the
    output: an untrained GPT's weights (std 0.02) make attention nearly uniform, so that a wrong scale or
    rotation barely moves the logits; and a LayerNorm's ones and zeros, or a bias's zeros, would make a
    LayerNorm used in another's place, or a bias left out, look right."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.in_features ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, nn.Embedding):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))
            elif isinstance(m, nn.LayerNorm) and m.weight is not None:
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g))
    return model


@dataclasses.dataclass
class Match:
    ref: nn.Module
    mine: nn.Module
    plans: list
    plan: object  # the first plan under which the learner's model gives the lesson's logits, else plans[0]
    equal: bool


class Lesson:
    """A step's model built twice with the task's own build_model, small: from the lesson's classes
    and from the learner's (the same seed)."""

    def __init__(self, number: str, learner):
        self.number, self.step, self.learner = number, STEPS[number], learner
        self.file = getattr(learner, "__file__", "") or ""
        self.names = {n: getattr(learner, n) for n in [*self.step.classes, *self.step.functions]}
        self.extras = {n: getattr(learner, n) for _, fs in self.step.extras for n in fs}
        task = self.step.task if number != "08" else "task07"  # task 08 streams from task 07's model
        self.task = importlib.import_module(Path(script(task)).stem)
        self.modules = [self.task] + [importlib.import_module(m) for m in self.step.patch]
        self.lesson_module = importlib.import_module(self.step.module)
        self.cfg = small_config(self.task)
        self.T = self.cfg.block_size
        self.conventions = ("half", "interleaved") if number == "09" else ("half",)
        self._plans, self._match = None, None

    def patched(self):
        return replaced(self.modules, self.names)

    def ns(self, learners: bool) -> Names:
        return Names(self.names if learners else {}, self.lesson_module)

    def build(self, learners: bool, **changes) -> nn.Module:
        cfg = dataclasses.replace(self.cfg, **changes)
        torch.manual_seed(0)
        with self.patched() if learners else contextlib.nullcontext():
            return self.task.build_model(cfg, V)

    def tokens(self, T: int | None = None, seed: int = 1, batch: int = B) -> torch.Tensor:
        return torch.randint(V, (batch, T or self.T), generator=torch.Generator().manual_seed(seed))

    def lengths(self) -> list[int]:
        return sorted({self.T, 3, 1}, reverse=True)

    def plans(self):
        """The step's model from the lesson's classes (its weights made distinct) and from the learner's,
        and the ways of copying the one's weights into the other."""
        if self._plans is None:
            ref, mine = distinct(self.build(False)).eval(), self.build(True).eval()
            try:
                self._plans = ref, mine, plans(ref, mine, self.conventions)
            except Mismatch as e:
                raise CheckFailed("the lesson's weights, held by your layers in any arrangement",
                                  "layers that can't hold them", layers_finding(str(e))) from None
        return self._plans

    def matched(self) -> Match:
        """Both models with the lesson's weights in the learner's, by the first way of matching them under
        which the learner's logits are the lesson's at every length (or the likeliest way, if none is)."""
        if self._match is None:
            ref, mine, found = self.plans()
            self._match = Match(ref, mine, found, found[0], False)
            for plan in found:
                plan.apply()
                if all(same_logits(ref, mine, self.tokens(T)) for T in self.lengths()):
                    self._match = Match(ref, mine, found, plan, True)
                    break
            else:
                found[0].apply()
        return self._match

    def why(self, T: int, error: str = "") -> Finding | None:
        """Why the learner's model fails (or differs) at length T: a length mistake (it fails at T and works
        at block_size), or the first place its forward departs from the lesson's, as far as it got."""
        if error and T != self.T and works_at(self.build(True).eval(), self.tokens(self.T)):
            return length_finding(T, self.T)
        try:
            m = self.matched()
        except CheckFailed:
            return None
        idx = self.tokens(T)
        return diagnose(departure, m.ref, m.mine, m.plan.pairs, lambda: m.ref(idx), lambda: m.mine(idx))


def layers_finding(text: str) -> Finding:
    return Finding("layers", text, "the checks copy the lesson's weights into your layers: they can have any names and "
                   "arrangement, but the same sizes, biases included", "compare each layer you make in __init__ with "
                   "the lesson's (the class's docstring says what they are)", "")


def same_logits(ref, mine, idx) -> bool:
    with torch.no_grad():
        try:
            a, b = tensor_of(ref(idx)), tensor_of(mine(idx))
        except NotImplementedError:
            raise
        except Exception:
            return False
    return close(a, b) or (a.shape == b.shape and close(F.log_softmax(a, -1), F.log_softmax(b, -1)))


def call(ls: Lesson, run, what: str = "", T: int | None = None):
    """run(), with an error in the learner's code turned into a failed check that names their line and,
    for a forward of the step's model at length T, says why where it can (ls.why)."""
    try:
        return run()
    except (CheckFailed, NotImplementedError):
        raise
    except Exception as e:
        error = learner_error(e, ls.file)
        finding = ls.why(T, error) if T is not None else None
        raise CheckFailed("no error", error + (f" {what}" if what else ""), finding) from None


def diagnose(explain, *args, **kwargs) -> Finding | None:
    """A diagnosis that fails says nothing, rather than hiding the check's own verdict (STRICT: it raises)."""
    try:
        return explain(*args, **kwargs)
    except NotImplementedError:
        raise
    except Exception:
        if STRICT:
            raise
        return None


STRICT = False  # tests set it: a diagnosis that fails is a bug to see


def works_at(model, idx) -> bool:
    try:
        with torch.no_grad():
            model(idx)
        return True
    except NotImplementedError:
        raise
    except Exception:
        return False


def works(model, x) -> bool:
    try:
        with torch.no_grad():
            model(x)
        return True
    except NotImplementedError:
        raise
    except Exception:
        return False


def same_output(ref, mine, x) -> bool:
    with torch.no_grad():
        try:
            return close(tensor_of(mine(x)), tensor_of(ref(x)))
        except NotImplementedError:
            raise
        except Exception:
            return False
