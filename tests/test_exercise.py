"""gpt/exercise.py: `start` writes a skeleton of a step, `check` grades a learner's file.

The solution passes every check; a fresh skeleton fails every check that runs the code to write, as
"not written yet"; the skeleton filled in with the solution's own bodies passes; each well-known
mistake fails the check that is there to catch it, with the hint that names it; tool errors
(a step that doesn't exist, no file, a syntax error, a wrong signature) end with exit 2 and a
message, no traceback; a check that hangs fails after the time limit and the run goes on.
"""

import ast
import importlib
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT

from course import exercise

STEPS = list(exercise.STEPS)
RESULT = re.compile(r"^(pass|FAIL)  ([^:\n]+)(.*)$")
VERDICT = re.compile(r"^step (\d\d) \((.*)\): (\d+) of (\d+) checks pass", re.M)
NOT_WRITTEN = re.compile(r'^(\s*)raise NotImplementedError\("write ([\w.]+): .*"\)$', re.M)


# --- helpers ------------------------------------------------------------------------------------------

def run_check(capsys, number, *args):
    """exercise.main(["check", number, *args]) in-process: (exit status, stdout, stderr)."""
    rc = exercise.main(["check", number, *args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def results(out: str) -> dict:
    """{check name: (passed, its text, the hint line included)} from check's output."""
    found, last = {}, None
    for line in out.splitlines():
        m = RESULT.match(line)
        if m:
            last = m.group(2)
            found[last] = [m.group(1) == "pass", line]
        elif last is not None and line.startswith("      "):
            found[last][1] += "\n" + line
        else:
            last = None
    return {name: (ok, text) for name, (ok, text) in found.items()}


def verdict(out: str) -> tuple[int, int]:
    m = VERDICT.search(out)
    assert m, f"no verdict line in:\n{out}"
    return int(m.group(3)), int(m.group(4))


def solution_bodies(number: str) -> dict:
    """{"Class.method" or "function": the solution's body (docstring left out), dedented} for what
    the step's learner writes, read from the solution's source."""
    step = exercise.STEPS[number]
    module = importlib.import_module(step.module)
    source = Path(module.__file__).read_text()
    lines = source.splitlines()

    def body(fn: ast.FunctionDef) -> str:
        statements = fn.body
        if isinstance(statements[0], ast.Expr) and isinstance(statements[0].value, ast.Constant):
            statements = statements[1:]  # the docstring stays in the skeleton
        return textwrap.dedent("\n".join(lines[statements[0].lineno - 1:fn.end_lineno]))

    bodies = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef) and node.name in step.classes:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name in step.classes[node.name]:
                    bodies[f"{node.name}.{item.name}"] = body(item)
        elif isinstance(node, ast.FunctionDef) and node.name in step.functions:
            bodies[node.name] = body(node)
    for name, functions in step.extras:  # the loop's pieces, from their own modules (step 00)
        extra = Path(importlib.import_module(name).__file__).read_text()
        lines = extra.splitlines()
        for node in ast.parse(extra).body:
            if isinstance(node, ast.FunctionDef) and node.name in functions:
                bodies[node.name] = body(node)
    return bodies


def filled(number: str) -> str:
    """The skeleton `start` writes, with every `raise NotImplementedError(...)` replaced by the
    solution's own body, indented as the raise was: what a learner who copies the lesson writes."""
    bodies = solution_bodies(number)
    text, n = NOT_WRITTEN.subn(lambda m: textwrap.indent(bodies[m.group(2)], m.group(1)), exercise.skeleton(number))
    assert n == len(bodies) > 0, (n, sorted(bodies))
    assert "raise NotImplementedError(" not in text
    return text


def with_mistake(number: str, old: str, new: str) -> str:
    """The filled-in skeleton with one piece of the solution (which must be there, once) replaced."""
    text = filled(number)
    assert text.count(old) == 1, f"{old!r} is in step {number}'s solution {text.count(old)} times, not once"
    return text.replace(old, new)


def write_learner(folder: Path, number: str, text: str) -> Path:
    path = folder / f"step{number}.py"
    path.write_text(text)
    return path


def cli(*args):
    """`python -m course.exercise ...` in a process of its own, from the repository's root."""
    return subprocess.run([sys.executable, "-m", "course.exercise", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


# --- the solution passes ----------------------------------------------------------------------------

@pytest.mark.parametrize("number", STEPS)
def test_the_solution_passes_every_check(number, capsys):
    rc, out, _ = run_check(capsys, number, "--solution")
    assert rc == 0, out
    checks = results(out)
    assert list(checks) == list(exercise.STEP_CHECKS[number]), out
    assert all(ok for ok, _ in checks.values()), out
    n = len(exercise.STEP_CHECKS[number])
    assert f"{n} of {n} checks pass" in out
    assert VERDICT.search(out).group(2) == "the solution"


@pytest.mark.slow
@pytest.mark.parametrize("number", STEPS)
def test_the_solution_trains_within_the_band(number, corpus_text):
    proc = cli("check", number, "--solution", "--train")  # its own process: all the CPU's threads, as a learner's
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^pass  training", proc.stdout, re.M), proc.stdout
    passed, total = verdict(proc.stdout)
    assert passed == total == len(exercise.STEP_CHECKS[number]) + 1, proc.stdout
    assert "Traceback" not in proc.stderr


# --- start, and a fresh skeleton ----------------------------------------------------------------------

@pytest.mark.parametrize("number", STEPS)
def test_a_fresh_skeleton_fails_as_not_written_yet(number, tmp_path, capsys):
    assert exercise.main(["start", number, "--folder", str(tmp_path)]) == 0
    path = tmp_path / f"step{number}.py"
    assert f"wrote {path}" in capsys.readouterr().out
    text = path.read_text()
    to_write = {f"{c}.{m}" for c, ms in exercise.STEPS[number].classes.items() for m in ms} | \
        set(exercise.STEPS[number].functions) | {f for _, fs in exercise.STEPS[number].extras for f in fs}
    assert {m.group(2) for m in NOT_WRITTEN.finditer(text)} == to_write, text

    rc, out, err = run_check(capsys, number, "--folder", str(tmp_path))
    assert rc == 1, out + err
    checks = results(out)
    assert list(checks) == list(exercise.STEP_CHECKS[number]), out
    failed = [text for ok, text in checks.values() if not ok]
    assert failed, out
    assert all("not written yet (write " in text for text in failed), out  # no other kind of failure
    passed, total = verdict(out)
    assert passed < total == len(exercise.STEP_CHECKS[number])
    assert str(path) in out


def test_start_never_overwrites(tmp_path, capsys):
    assert exercise.main(["start", "05", "--folder", str(tmp_path)]) == 0
    path = tmp_path / "step05.py"
    work = path.read_text().replace('raise NotImplementedError("write MLP.forward', 'return self.net(x)  # mine\n'
                                    '        raise NotImplementedError("write MLP.forward')
    path.write_text(work)
    capsys.readouterr()
    assert exercise.main(["start", "05", "--folder", str(tmp_path)]) == 0
    assert "already exists" in capsys.readouterr().out
    assert path.read_text() == work
    assert list(tmp_path.iterdir()) == [path]  # no second file, no temporary file left


def test_start_makes_the_folder(tmp_path, capsys):
    folder = tmp_path / "course" / "mine"
    assert exercise.main(["start", "1", "--folder", str(folder)]) == 0  # "1" is step 01
    assert (folder / "step01.py").is_file()
    assert f"wrote {folder / 'step01.py'}" in capsys.readouterr().out


# --- a correct learner passes -------------------------------------------------------------------------

@pytest.mark.parametrize("number", STEPS)
def test_the_skeleton_filled_with_the_solutions_bodies_passes(number, tmp_path, capsys):
    path = write_learner(tmp_path, number, filled(number))
    rc, out, err = run_check(capsys, number, "--folder", str(tmp_path))
    assert rc == 0, out + err
    n = len(exercise.STEP_CHECKS[number])
    assert f"{n} of {n} checks pass" in out
    assert VERDICT.search(out).group(2) == str(path)


def attention_written_out(indent: str, scale: str, result: str, softmax_dim: int = -1, masked: bool = True) -> str:
    """Attention as a learner writes it from the lesson, instead of causal_attention(q, k, v)."""
    lines = ["T = q.size(-2)",
             f"scores = q @ k.transpose(-2, -1) * {scale}  # (..., T, hs) @ (..., hs, T) -> (..., T, T)"]
    if masked:
        lines.append("scores = scores.masked_fill(torch.tril(torch.ones(T, T)) == 0, float('-inf'))")
    lines.append(f"{result} F.softmax(scores, dim={softmax_dim}) @ v")
    return f"\n{indent}".join(lines)


STEP01_ATTENTION = """wei = q @ k.transpose(-2, -1) * k.size(-1) ** -0.5  # (B, T, hs) @ (B, hs, T) -> (B, T, T)
        wei = wei.masked_fill(~causal_mask(T, x.device), float("-inf"))  # no token reads the future
        wei = F.softmax(wei, dim=-1)  # (B, T, T), each row sums to 1
        v = self.value(x)  # (B, T, C) -> (B, T, hs)
        return wei @ v  # (B, T, T) @ (B, T, hs) -> (B, T, hs)"""
STEP02_ATTENTION = "out = causal_attention(q, k, v, fused=self.fused)"

CORRECT_BY_HAND = {  # the solution's attention written out another way, right: these must pass
    "01": (STEP01_ATTENTION, "v = self.value(x)\n        " + attention_written_out(" " * 8, "k.size(-1) ** -0.5", "return")),
    "02": (STEP02_ATTENTION, attention_written_out(" " * 8, "self.head_size ** -0.5", "out =")),
}


@pytest.mark.parametrize("number", CORRECT_BY_HAND)
def test_attention_written_out_by_hand_passes(number, tmp_path, capsys):
    write_learner(tmp_path, number, with_mistake(number, *CORRECT_BY_HAND[number]))
    rc, out, err = run_check(capsys, number, "--folder", str(tmp_path))
    assert rc == 0, out + err


# --- well-known mistakes: the check that catches each, and the hint that names it -------------------

# name: (step, a piece of the solution, the mistake in its place, {check that must fail: what it must say}).
# What it must say is in the check's hint; "got: ..." is in what it got; "" is any hint.
LEARNER_MISTAKES = {
    "00 softmax before the loss": (
        "00", "return logits, language_model_loss(logits, targets)",
        "return logits, None if targets is None else F.cross_entropy(F.softmax(logits, -1).flatten(0, 1), "
        "targets.flatten())",
        {"same as the solution": "softmax before F.cross_entropy"}),
    "01 no causal mask": (
        "01", STEP01_ATTENTION,
        "v = self.value(x)\n        " + attention_written_out(" " * 8, "k.size(-1) ** -0.5", "return", masked=False),
        {"causal": "mask the future", "same as the solution": "mask the future"}),
    "02 scaled by n_embd": (
        "02", STEP02_ATTENTION, attention_written_out(" " * 8, "x.size(-1) ** -0.5", "out ="),
        {"same as the solution": "not C ** -0.5"}),
    "02 softmax over the queries": (
        "02", STEP02_ATTENTION,
        attention_written_out(" " * 8, "self.head_size ** -0.5", "out =", softmax_dim=-2),
        {"same as the solution": "softmax over the last dimension"}),
    "03 no ReLU": (
        "03", "self.net = nn.Sequential(nn.Linear(n_embd, n_embd), nn.ReLU())",
        "self.net = nn.Sequential(nn.Linear(n_embd, n_embd))",
        {"same as the solution": ""}),
    "04 the block forgets its feed-forward": (
        "04", "return self.ffwd(self.sa(x))", "return self.sa(x)",
        {"gradients": "got: ffwd", "same as the solution": ""}),
    "05 no residual": (
        "05", "x = x + self.sa(x)\n        x = x + self.ffwd(x)", "x = self.sa(x)\n        x = self.ffwd(x)",
        {"same as the solution": "residual"}),
    "06 post-LN": (
        "06", "x = x + self.sa(self.ln1(x))\n        x = x + self.ffwd(self.ln2(x))",
        "x = self.ln1(x + self.sa(x))\n        x = self.ln2(x + self.ffwd(x))",
        {"same as the solution": "post-LN"}),
    "07 dropout on in eval": (
        "07", "self.dropout if self.training else 0.0", "self.dropout",
        {"dropout off in eval": "model.eval()"}),
    "08 the cache forgets positions": (
        "08", "self.k[layer, :, :, start:end] = k\n        self.v[layer, :, :, start:end] = v",
        "self.k[layer, :, :, :k.size(2)] = k\n        self.v[layer, :, :, :v.size(2)] = v",
        {"cached stream equals a full forward": "positions"}),
    "09 k rotated from position 0": (
        "09", "q, k = self.rotary(q, start), self.rotary(k, start)", "q, k = self.rotary(q, start), self.rotary(k)",
        {"scores depend only on the offset": "both q and k"}),
}


@pytest.mark.parametrize("mistake", LEARNER_MISTAKES)
def test_a_mistake_fails_its_check_with_its_hint(mistake, tmp_path, capsys):
    number, old, new, expected = LEARNER_MISTAKES[mistake]
    write_learner(tmp_path, number, with_mistake(number, old, new))
    rc, out, err = run_check(capsys, number, "--folder", str(tmp_path))
    assert rc == 1, out + err
    checks = results(out)
    assert list(checks) == list(exercise.STEP_CHECKS[number]), out
    for name, words in expected.items():
        ok, text = checks[name]
        assert not ok, f"{name} passed:\n{out}"
        m = re.match(rf"FAIL  {name}: expected (.+); got (.+)\n      hint: (.+)$", text, re.S)
        assert m, f"not 'expected ...; got ...', then a hint:\n{text}"
        got, hint = m.group(2), m.group(3)
        if words.startswith("got: "):
            assert words.removeprefix("got: ") in got, f"{name} doesn't say it got {words!r}:\n{text}"
        else:
            assert words in hint, f"the hint of {name} doesn't say {words!r}:\n{text}"
    assert "not written yet" not in out
    if "parameters" in checks:  # the mistake changes no layer: the weights still copy across
        assert checks["parameters"][0], out
    passed, total = verdict(out)
    assert passed <= total - len(expected)


def test_logits_with_nan_are_not_the_solutions(tmp_path, capsys):
    # the mask the wrong way round: the first and last rows of scores are all -inf, their softmax NaN
    write_learner(tmp_path, "01", with_mistake("01", STEP01_ATTENTION, (
        "v = self.value(x)\n        T = q.size(-2)\n        scores = q @ k.transpose(-2, -1) * k.size(-1) ** -0.5\n"
        "        scores = scores.masked_fill(torch.tril(torch.ones(T, T)) == 1, float('-inf'))\n"
        "        return F.softmax(scores, dim=-1) @ v")))
    rc, out, err = run_check(capsys, "01", "--folder", str(tmp_path))
    assert rc == 1, out + err
    ok, text = results(out)["same as the solution"]
    assert not ok, out
    # NaN logits differ from the solution's: the check must say so, not that the logits match and the loss is wrong
    assert text.startswith("FAIL  same as the solution: expected the solution's logits"), text


def test_an_error_in_the_learners_code_names_their_line(tmp_path, capsys):
    text = filled("01").replace("q = self.query(x)", "q = self.querry(x)")
    lineno = next(i for i, line in enumerate(text.splitlines(), 1) if "self.querry(x)" in line)
    path = write_learner(tmp_path, "01", text)
    rc, out, err = run_check(capsys, "01", "--folder", str(tmp_path))
    assert rc == 1, out + err
    ok, line = results(out)["shapes"]
    assert not ok and "AttributeError" in line and "querry" in line, out
    assert f"(your line {lineno}: q = self.querry(x)" in line, out
    assert "Traceback" not in out + err
    assert str(path) in out


def test_the_checks_run_outside_the_main_thread(capsys):
    # a notebook's or an editor's runner may call check from a thread: SIGALRM's time limit is the main thread's only
    import threading

    returned = []
    worker = threading.Thread(target=lambda: returned.append(exercise.main(["check", "00", "--solution"])))
    worker.start()
    worker.join(60)
    out = capsys.readouterr().out
    assert returned == [0], out
    n = len(exercise.STEP_CHECKS["00"])
    assert f"{n} of {n} checks pass" in out


# --- tool errors: exit 2, a message, no traceback ---------------------------------------------------

def test_a_step_that_does_not_exist(tmp_path):
    proc = cli("check", "12", "--folder", str(tmp_path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "there is no step 12" in proc.stderr and "00, 01" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def tool_error(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as stopped:
        exercise.main(list(argv))
    assert stopped.value.code == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert captured.err.startswith("error: "), captured.err
    return captured.err


def test_a_missing_file_says_to_start_first(tmp_path, capsys):
    err = tool_error(capsys, "check", "05", "--folder", str(tmp_path))
    assert str(tmp_path / "step05.py") in err
    assert "python -m course.exercise start 05" in err


def test_a_syntax_error_shows_the_file_the_line_and_its_text(tmp_path):
    text = filled("01")
    broken = "        k = = self.key(x)  # (B, T, C) -> (B, T, hs)"
    text = text.replace("        k = self.key(x)  # (B, T, C) -> (B, T, hs)", broken)
    lineno = text.splitlines().index(broken) + 1
    path = write_learner(tmp_path, "01", text)
    proc = cli("check", "01", "--folder", str(tmp_path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"error: {path}, line {lineno}: " in proc.stderr, proc.stderr
    assert broken.strip() in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_an_error_at_import_names_the_learners_line(tmp_path, capsys):
    # a learner's smoke test at the bottom of the file, which calls the repository's code with a bad argument
    text = filled("02") + "\n\ncheck_length(torch.zeros(1, 9, dtype=torch.long), 8)  # my smoke test\n"
    lineno = len(text.splitlines())
    path = write_learner(tmp_path, "02", text)
    err = tool_error(capsys, "check", "02", "--folder", str(tmp_path))
    assert f"{path} fails when it is imported" in err
    assert "exceeds block_size 8" in err
    assert f"line {lineno}:" in err, err  # the learner's line, not the line in gpt/model.py that raised


def test_a_file_that_is_not_utf8(tmp_path, capsys):
    path = tmp_path / "step03.py"
    path.write_bytes(filled("03").encode() + b"\n# caf\xe9, in Latin-1\n")
    err = tool_error(capsys, "check", "03", "--folder", str(tmp_path))
    assert str(path) in err and re.search(r"utf-?8", err, re.I), err  # what is wrong with it, not a traceback


def test_a_wrong_signature_names_the_missing_argument(tmp_path, capsys):
    text = filled("01").replace("def __init__(self, n_embd: int, head_size: int):",
                                "def __init__(self, n_embd: int):\n        head_size = n_embd")
    write_learner(tmp_path, "01", text)
    err = tool_error(capsys, "check", "01", "--folder", str(tmp_path))
    assert "AttentionHead.__init__" in err and "add head_size" in err, err


def test_a_missing_class_says_to_keep_the_names(tmp_path, capsys):
    write_learner(tmp_path, "05", filled("05").replace("class MLP(", "class MyMLP("))
    err = tool_error(capsys, "check", "05", "--folder", str(tmp_path))
    assert "no MLP" in err, err


# --- a check that hangs -------------------------------------------------------------------------------

def test_a_check_that_hangs_fails_after_the_time_limit(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(exercise, "TIME_LIMIT", 2)
    write_learner(tmp_path, "00", with_mistake("00", "logits = self.logits_table(idx)  # (B, T) -> (B, T, V)",
                                               "while True:\n            pass"))
    rc, out, err = run_check(capsys, "00", "--folder", str(tmp_path))
    assert rc == 1, out + err
    checks = results(out)
    assert checks["parameters"][0], out  # builds, but never calls forward
    hung = [name for name, (ok, text) in checks.items() if "took longer than 2 s" in text]
    assert hung == ["shapes", "initial loss", "same as the solution", "gradients"], out
    assert all(not checks[name][0] for name in hung)
    assert verdict(out) == (3, 7)  # estimate_loss and generate, written right, pass


def test_estimate_loss_and_generate_with_the_classic_mistakes_fail_with_their_hints(tmp_path, capsys):
    """Step 00's loop pieces: a sum instead of a mean, a model left in eval mode, no crop of the context."""
    cases = [
        ("out[name] = total / len(x)", "out[name] = total", "estimate_loss", "not their sum"),
        ("logits, _ = model(idx[:, -model.block_size:])", "logits, _ = model(idx)", "generate", "crop the context"),
    ]
    for old, new, check, words in cases:
        write_learner(tmp_path, "00", with_mistake("00", old, new))
        rc, out, err = run_check(capsys, "00", "--folder", str(tmp_path))
        checks = results(out)
        assert rc == 1 and not checks[check][0], out
        assert words in checks[check][1], out
