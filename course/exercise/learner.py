"""The learner's file: found, read, compiled, imported, and its classes' signatures compared with the
lesson's. Every problem is a UserError that says what is wrong and where, with the learner's line."""

import importlib
import importlib.util
import inspect
import traceback
from pathlib import Path

from gpt.errors import UserError

from .steps import Step


def learner_file(folder: Path, number: str) -> Path:
    return Path(folder) / f"step{number}.py"


def read_learner(path: Path) -> str:
    """The file's text, compiled to find a syntax error before anything runs."""
    if not path.is_file():
        raise UserError(f"no {path}: start the step first: python -m course.exercise start {path.stem[4:]}")
    try:
        source = path.read_text(encoding="utf-8")
        compile(source, str(path), "exec")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (byte {e.start}): save it as UTF-8") from None
    except SyntaxError as e:
        line = (e.text or "").rstrip("\n")
        raise UserError(f"{path}, line {e.lineno}: {e.msg}\n    {line}\n    {' ' * max(0, (e.offset or 1) - 1)}^") from None
    return source


def load_learner(path: Path):
    """The learner's module, imported; an error while it is imported names the learner's line."""
    read_learner(path)
    spec = importlib.util.spec_from_file_location(f"learner_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise UserError(f"{path} fails when it is imported{your_line(e, str(path), ', line {lineno}')}: "
                        f"{type(e).__name__}: {e}") from None
    return module


def your_line(error: BaseException, filename: str, template: str = " (your line {lineno}: {line})") -> str:
    """Where in the learner's file an error was raised (the deepest of its lines), or ''."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == filename]
    if not frames:
        return ""
    return template.format(lineno=frames[-1].lineno, line=frames[-1].line)


def lesson_object(step: Step, name: str):
    for module, functions in step.extras:
        if name in functions:
            return getattr(importlib.import_module(module), name)
    return getattr(importlib.import_module(step.module), name)


def check_signatures(step: Step, learner) -> None:
    """Each class and function is there, and takes the arguments the lesson's takes."""
    for name in step.names():
        if not hasattr(learner, name):
            raise UserError(f"your file has no {name}: keep the skeleton's names (python -m course.exercise start "
                            f"{step.task[4:]} --folder DIR writes a fresh one elsewhere)")
        mine, theirs = getattr(learner, name), lesson_object(step, name)
        targets = [(name, mine, theirs)]
        if inspect.isclass(theirs):  # __init__ and forward as the lesson's; a helper only if the class has one
            targets = [(f"{name}.{m}", getattr(mine, m), getattr(theirs, m)) for m in ("__init__", *step.classes[name])
                       if m in ("__init__", "forward") or hasattr(mine, m)]
        for label, ours, want in targets:
            got, expected = list(inspect.signature(ours).parameters), list(inspect.signature(want).parameters)
            if got != expected:
                missing = [p for p in expected if p not in got]
                extra = [p for p in got if p not in expected]
                what = (f"add {', '.join(missing)}" if missing else "") + ("; " if missing and extra else "") + \
                       (f"remove {', '.join(extra)}" if extra else "") or "keep the order"
                raise UserError(f"{label} takes ({', '.join(got)}); the lesson's takes ({', '.join(expected)}): {what}")
