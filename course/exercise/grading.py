"""A step's checks run one after the other on a learner's classes, each turned into a Result: what the
learner's own code printed is kept (the first lines only), and an error in it names the learner's line.

This runs wherever it is called: the command runs it in a process of its own (runner.py), so that a
time limit can end it; tests call it directly.
"""

import contextlib
import importlib
import io
import re
import types
from pathlib import Path

from .checks import CHECKS
from .lesson import Lesson
from .diagnosis import learner_error
from .results import CheckFailed, Finding, Result
from .skeleton import source_of
from .steps import POINTS, STEPS

PRINTED_KEPT = 600  # characters of what the learner's code printed that a result shows


class Bounded(io.TextIOBase):
    """A stream that keeps the first `keep` characters written to it and counts the rest, so that code
    that prints without end fills no memory. notify(count) is called every `every` characters."""

    def __init__(self, keep: int = PRINTED_KEPT, notify=None, every: int = 1 << 20):
        self.kept, self.count, self.keep = [], 0, keep
        self.notify, self.every, self.next_notice = notify, every, every

    def writable(self):
        return True

    def write(self, s) -> int:
        s = str(s)
        room = self.keep - sum(len(k) for k in self.kept) if self.count < self.keep else 0
        if room > 0:
            self.kept.append(s[:room])
        self.count += len(s)
        if self.notify is not None and self.count >= self.next_notice:
            self.next_notice = self.count + self.every
            self.notify(self.count, self.text())
        return len(s)

    def text(self) -> str:
        return "".join(self.kept)

    def summary(self) -> str:
        text = self.text().rstrip("\n")
        if not self.count:
            return ""
        more = self.count - len(self.text())
        return text + (f"\n... and {more:,} more characters" if more > 0 else "")


def solution_namespace(number: str):
    """The repository's own classes and functions, as if they were a learner's file."""
    from .learner import lesson_object

    step = STEPS[number]
    module = importlib.import_module(step.module)
    names = {n: lesson_object(step, n) for n in step.names()}
    return types.SimpleNamespace(__file__=module.__file__, **names)


def lesson_code(name: str) -> str:
    """The lesson's source of "Class.method" or "function", for --show-solution."""
    if not name:
        return ""
    cls, _, method = name.partition(".")
    for module in ("gpt.model", "gpt.kv_cache", "gpt.modern", "gpt.train", "gpt.generate"):
        lines, tree = source_of(module)
        for node in tree.body:
            if node.__class__.__name__ == "ClassDef" and node.name == cls and method:
                for item in node.body:
                    if getattr(item, "name", None) == method:
                        return body_text(item, lines)
            elif getattr(node, "name", None) == cls and not method:
                return body_text(node, lines)
    return ""


def body_text(node, lines) -> str:
    import textwrap

    first = node.body[0]
    skip = first.__class__.__name__ == "Expr" and hasattr(first, "value") and isinstance(
        getattr(first.value, "value", None), str)
    start = node.body[1].lineno if skip and len(node.body) > 1 else first.lineno
    return textwrap.dedent("\n".join(lines[start - 1:node.end_lineno]))


def out_of_memory(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or "allocate" in str(e) or "out of memory" in str(e)


def run_check(name: str, ls: Lesson, level: int = 1, notify=None) -> Result:
    points = POINTS.get(name, 1)
    printed = Bounded(notify=notify)
    result = Result(name, False, 0, points)
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            note = CHECKS[name](ls)
        result.passed, result.points, result.note = True, points, note or ""
    except CheckFailed as e:
        result.expected, result.got, result.finding = e.expected, e.got, e.finding
    except NotImplementedError as e:
        what, _, idea = str(e).strip().removeprefix("write ").partition(": ")
        result.error = f"not written yet: {what or 'NotImplementedError'}"
        if idea:
            result.finding = Finding("not-written", f"{what} raises NotImplementedError", idea)
    except RecursionError:
        result.error = "a method calls itself without end (RecursionError)"
    except Exception as e:
        if out_of_memory(e):
            result.error = "ran out of memory at these small sizes: something grows without bound"
        else:
            result.error = learner_error(e, ls.file)
    except SystemExit as e:
        result.error = f"your code called exit() ({e.code}): the checks went on without it"
    if not result.passed:
        result.printed = printed.summary()
        if result.finding is not None and level >= 3:
            result.lesson_code = lesson_code(result.finding.solution)
    return result


def grade(number: str, learner, level: int = 1, names=None, notify=None, on_start=None):
    """Each check of the step on the learner's classes (a module, or solution_namespace): a Result at a
    time. notify(count, first) while a check's output grows without end; on_start(name) before each."""
    ls = Lesson(number, learner)
    for name in names or STEPS[number].checks:
        if on_start:
            on_start(name)
        yield run_check(name, ls, level, notify)


def train_check(number: str, learner, level: int = 1, on_line=None) -> Result:
    """The learner's model trained as the task trains it; its final val loss against the band."""
    from ..device import choose_precision, resolve_device
    from ..reference import band, hardware, normal_width

    ls = Lesson(number, learner)
    device = resolve_device("auto")
    where = hardware(device, choose_precision(device).name)
    reference, measured_on = band(ls.step.task, where)
    if number == "08" or reference is None:
        return Result("training", True, POINTS["training"], POINTS["training"],
                      note="nothing to train in this step: task 08 streams from task 07's model")
    out = Captured(on_line)
    args = ["--runs", "", "--sample-tokens", "0"] + (["--checkpoint", ""] if number in ("07", "09") else [])
    if number == "07":
        args += ["--preset", "cpu"]
    try:
        with ls.patched(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(out.other):
            ls.task.main(args)
    except Exception as e:  # NotImplementedError included: the checks above said so already
        result = Result("training", False, 0, POINTS["training"], error=learner_error(e, ls.file))
        if "device" in str(e):
            result.finding = Finding("device", f"the run on {device} meets a tensor on another device",
                                     "the checks run on the CPU; training runs where the task runs, here on "
                                     f"{device}: a tensor your forward makes (torch.arange, torch.ones, a mask) "
                                     "belongs on the input's device", "make it with device=x.device (or idx.device), "
                                     "or register it as a buffer, which moves with the model", "")
        return result
    lines = out.epochs
    if not lines:
        return Result("training", False, 0, POINTS["training"], error="the run printed no loss table")
    final = float(re.search(r"avg val loss (\S+)", lines[-1]).group(1))
    width = normal_width(reference)
    ok = abs(final - reference["mean"]) <= width
    elsewhere = "" if measured_on == where else f"; measured on {measured_on}, not on this {where}, whose numbers " \
                                                f"differ a little"
    expected = (f"a final val loss within the band {reference['mean']:.4f} ± {width:.4f} (3 standard deviations over "
                f"{reference['seeds']} seeds, or 0.01{elsewhere})")
    result = Result("training", ok, POINTS["training"] if ok else 0, POINTS["training"], expected=expected,
                    got=f"{final:.4f}", note=f"final val {final:.4f}, the band {reference['mean']:.4f} ± {width:.4f}"
                                             f"{elsewhere}")

    if not ok:
        result.finding = Finding("training", f"the run ends at {final:.4f}", "the checks above pass but it trains "
                                 "differently: compare how the loss falls with the task's own table", "", "")
    return result


class Captured(io.TextIOBase):
    """A run's output: the loss table's lines kept (and given to on_line as they come), everything else
    bounded."""

    def __init__(self, on_line=None):
        self.epochs, self.partial, self.other, self.on_line = [], "", Bounded(), on_line

    def writable(self):
        return True

    def write(self, s) -> int:
        text = self.partial + str(s)
        *done, self.partial = text.split("\n")
        for line in done:
            if line.startswith("Epoch ") and len(self.epochs) < 1000:
                self.epochs.append(line)
                if self.on_line:
                    self.on_line(line)
            else:
                self.other.write(line + "\n")
        if len(self.partial) > 10_000:
            self.other.write(self.partial)
            self.partial = ""
        return len(s)
