"""The file `start` writes: a step's classes and functions cut from the solution's own source, so that
the two never drift apart, with the bodies to write replaced by their docstring, their shape comments
and a NotImplementedError that names the idea (never the line).

It imports only what the learner is not asked to write: the lesson's earlier steps, as the step's
table lists them (steps.py). A name the given code needs that the table doesn't list is a mistake in
the table, and making the skeleton says so.
"""

import ast
import builtins
import importlib
import re
import textwrap
from pathlib import Path

from .steps import STEPS, Step

SHAPE = re.compile(r"#\s*(\(.*)$")  # a trailing comment that gives a shape, "# (B, T, C) -> (B, T, hs)"
LIBRARIES = {"torch", "nn", "F", "math"}  # what every skeleton imports


def source_of(module_name: str) -> tuple[list[str], ast.Module]:
    source = Path(importlib.import_module(module_name).__file__).read_text(encoding="utf-8")
    return source.splitlines(), ast.parse(source)


def skeleton(number: str) -> str:
    step = STEPS[number]
    parts = []
    lines, tree = source_of(step.module)
    wanted = set(step.classes) | set(step.given_classes) | set(step.functions)
    for node in tree.body:
        if node.__class__ is ast.ClassDef and node.name in wanted:
            parts.append(class_skeleton(node, lines, step.classes.get(node.name, ()), step))
        elif isinstance(node, ast.FunctionDef) and node.name in step.functions:
            parts.append(function_skeleton(node, lines, idea(step, node.name)))
    for module_name, functions in step.extras:  # the loop's pieces the step is about, from their own modules
        extra_lines, extra_tree = source_of(module_name)
        for node in extra_tree.body:
            if isinstance(node, ast.FunctionDef) and node.name in functions:
                parts.append(function_skeleton(node, extra_lines, idea(step, node.name)))
    body = "\n\n\n".join(parts)
    check_names(step, body)
    return header(number, step) + "\n\n\n" + body + "\n"


def idea(step: Step, name: str) -> str:
    return step.ideas.get(name, "")


def header(number: str, step: Step) -> str:
    writes = ", ".join(step.to_write())
    note = f"\n{step.note}\n" if step.note else ""
    imports = ["import math  # noqa: F401", "", "import torch  # noqa: F401", "import torch.nn as nn  # noqa: F401",
               "import torch.nn.functional as F  # noqa: F401"]
    lesson = [import_line(module, names) for module, names in step.imports.items()]
    if lesson:
        imports += ["", "# the lesson's earlier steps, which this one builds on"] + lesson
    return (f'"""Step {number} of the course, for you to write: {writes}.\n\n'
            f"Write the bodies that raise NotImplementedError (each says the idea), then check your work:\n\n"
            f"    python -m course.exercise check {number}                   # a line per check, as each finishes\n"
            f"    python -m course.exercise check {number} --hint            # a failing check says more\n"
            f"    python -m course.exercise check {number} --show-solution   # and shows the lesson's code for it\n\n"
            f"Keep the names and arguments of the classes and functions: the checks build the step's model\n"
            f"with them. Name and arrange the layers inside as you like: the checks match the lesson's\n"
            f"weights to yours by what they are.\n{note}"
            f'"""\n\n' + "\n".join(imports))


def import_line(module: str, names: tuple) -> str:
    line = f"from {module} import {', '.join(names)}  # noqa: F401"
    if len(line) <= 100:
        return line
    return f"from {module} import (  # noqa: F401\n" + textwrap.fill(", ".join(names), 96, initial_indent="    ",
                                                                     subsequent_indent="    ") + ")"


def class_skeleton(node: ast.ClassDef, lines: list[str], to_write: tuple, step: Step) -> str:
    out, cursor = [], node.lineno - 1 - len(node.decorator_list)
    for item in node.body:
        if not isinstance(item, ast.FunctionDef):
            continue
        start = item.lineno - 1 - len(item.decorator_list)
        if item.name in to_write:
            out += lines[cursor:start]
            out.append(function_skeleton(item, lines, idea(step, f"{node.name}.{item.name}"), f"{node.name}."))
            cursor = item.end_lineno
        elif item.name in step.omit:
            out += trim_blank(lines[cursor:start])
            cursor = item.end_lineno
    out += lines[cursor:node.end_lineno]
    return "\n".join(out)


def trim_blank(lines: list[str]) -> list[str]:
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines + [""]


def function_skeleton(node: ast.FunctionDef, lines: list[str], hint: str, owner: str = "") -> str:
    body = node.body
    has_doc = isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant)
    head_end = body[0].end_lineno if has_doc else body[0].lineno - 1
    head = lines[node.lineno - 1 - len(node.decorator_list):head_end]
    indent = " " * body[0].col_offset
    shapes = [f"{indent}# {m.group(1)}" for line in lines[head_end:node.end_lineno] if (m := SHAPE.search(line))]
    message = f"write {owner}{node.name}: {hint}" if hint else f"write {owner}{node.name}"
    wrapped = textwrap.wrap(message, 100 - len(indent) - 8)
    if len(wrapped) > 1:
        text = f"\n{indent}    ".join(quoted(part + " ") for part in wrapped[:-1]) + f"\n{indent}    {quoted(wrapped[-1])}"
        raise_line = f"{indent}raise NotImplementedError(\n{indent}    {text})"
    else:
        raise_line = f"{indent}raise NotImplementedError({quoted(message)})"
    return "\n".join(head + shapes + [raise_line])


def quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def check_names(step: Step, body: str) -> None:
    """Every global name the given code uses is defined in it, imported, or a builtin."""
    tree = ast.parse(textwrap.dedent(body))
    defined = {n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    imported = {name for names in step.imports.values() for name in names}
    local = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.arg):
            local.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            local.add(node.id)
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    missing = used - defined - imported - local - LIBRARIES - set(dir(builtins))
    if missing:
        raise RuntimeError(f"step {STEPS and step.task}'s skeleton uses {sorted(missing)}, which its imports don't "
                           f"give: list them in steps.py, or omit the method that uses them")
