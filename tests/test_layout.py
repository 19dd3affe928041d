"""The shape of the repository: gpt/ is the lesson and nothing else, and importing it changes nothing;
the machinery is course/; every script imports course first, so that it speaks and handles Ctrl-C
before PyTorch loads."""

import ast
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT

LESSON = sorted(p.stem for p in (ROOT / "gpt").glob("*.py") if p.stem != "__init__")
SCRIPTS = sorted(p.name for p in ROOT.glob("*.py"))
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "GPT_CPU_KERNELS")}


def imported_modules(path) -> list[str]:
    """The modules a file's import statements name, in order (relative ones as written: '.model')."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append("." * node.level + (node.module or ""))
    return names


@pytest.mark.parametrize("module", LESSON)
def test_no_gpt_module_imports_the_machinery(module):
    named = imported_modules(ROOT / "gpt" / f"{module}.py")
    assert not [m for m in named if m == "course" or m.startswith("course.") or m.startswith("..")], named


@pytest.fixture(scope="module")
def fresh_imports() -> dict:
    """In one fresh process: what importing gpt.model changed (the environment, a signal handler,
    sys.excepthook, what it printed), then which course modules importing every gpt module loaded."""
    code = """
import io, json, os, signal, sys
printed = io.StringIO()
sys.stdout, real = printed, sys.stdout
state = lambda: (dict(os.environ), {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}, sys.excepthook)
before = state()
import gpt.model
after = state()
changed = [name for name, b, a in zip(("the environment", "a signal handler", "sys.excepthook"), before, after) if b != a]
import """ + ", ".join(f"gpt.{m}" for m in LESSON) + """
sys.stdout = real
print(json.dumps({"changed": changed, "printed": printed.getvalue(),
                  "course": sorted(m for m in sys.modules if m == "course" or m.startswith("course."))}))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=CLEAN_ENV, capture_output=True, text=True,
                         check=True)
    return {**json.loads(out.stdout), "stderr": out.stderr}


def test_importing_every_gpt_module_loads_nothing_of_course(fresh_imports):
    """The lesson's modules, and what they import in turn, with course nowhere."""
    assert fresh_imports["course"] == [], fresh_imports["course"]


def test_importing_gpt_model_only_defines_names(fresh_imports):
    """No signal handler, sys.excepthook or environment variable changes, and nothing is printed: a
    notebook that imports one class gets that class and nothing else."""
    assert fresh_imports["changed"] == [], fresh_imports["changed"]
    assert fresh_imports["printed"] == "" and fresh_imports["stderr"] == "", fresh_imports


def test_a_program_that_is_not_this_repositorys_gets_nothing_from_importing_course(tmp_path):
    """course prepares only the programs this repository starts (course/startup.py): not a notebook,
    a test runner or a learner's own script elsewhere."""
    script = tmp_path / "mine.py"
    script.write_text("import os, signal, sys\nh = signal.getsignal(signal.SIGINT)\nimport course.run\n"
                      "print(signal.getsignal(signal.SIGINT) is h, os.environ.get('ATEN_CPU_CAPABILITY'))\n")
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env={**CLEAN_ENV, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "None"] and out.stderr == "", out.stdout + out.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_imports_course_first(script):
    """Before anything imports torch: course says the script is starting and makes Ctrl-C end it with
    one line (course/startup.py)."""
    named = imported_modules(ROOT / script)
    assert named and named[0].split(".")[0] == "course", f"{script} imports {named[:3]} first"


def test_a_script_says_it_is_starting_before_torch_loads_and_within_2_seconds():
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "task01.py", "--help"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    first = proc.stderr.readline()
    said_at = time.perf_counter() - start
    proc.communicate(timeout=60)
    assert first.startswith("task01.py: starting (loading PyTorch"), first
    assert said_at < 2.0, f"the first line came after {said_at:.1f} s"


def test_the_programs_course_prepares_are_this_repositorys_scripts_and_its_commands():
    from course.startup import started_program

    assert started_program(["python", "task07.py"], str(ROOT / "task07.py")) == "task07.py"
    assert started_program(["python", "-m", "course.explore", "--port", "0"], None) == "python -m course.explore"
    for argv, main_file in ((["python", "-"], "<stdin>"), (["python", "-m", "pytest"], "/usr/lib/pytest/__main__.py"),
                            (["python", "mine.py"], "/home/me/mine.py"), (["python", "-c", "import course"], None)):
        assert started_program(argv, main_file) is None, (argv, main_file)
