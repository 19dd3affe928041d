"""course/exercise: `start` writes a step's skeleton, `check` grades a learner's file, `status` shows every
step.

The solution passes every check; a fresh skeleton fails every check that runs the code to write, as "not
written yet"; the skeleton gives the idea, never the answer, and imports nothing the learner is asked to
write nor a later step; the hint ladder shows the lesson's code only when asked for; tool errors end
with exit 2 and a message, no traceback; the learner's code runs in a process of its own, which the
time limit ends whatever the code does, with each check's line printed as it finishes; the results
file holds what autograders read. The mutation suite (wrong and right learners) is
tests/test_exercise_mutations.py.

Most tests run the checking in this process (runner.run_here) to stay fast; the tests of the child
process start one.
"""

import ast
import json
import re
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from learner_files import Learner, solution_bodies, write_file

from course import exercise
from course.exercise import cli as cli_module, runner
from course.exercise.skeleton import skeleton
from course.exercise.steps import INTRODUCED, POINTS, STEPS

NUMBERS = list(STEPS)
RESULT = re.compile(r"^(pass|FAIL)  ([^:(\n]+?)(?: \(|:|$)")
VERDICT = re.compile(r"^step (\d\d) \((.*)\): (\d+) of (\d+) checks pass", re.M)


@pytest.fixture
def here(monkeypatch):
    """`check` runs the checking in this process: no child, no time limit."""
    monkeypatch.setattr(runner, "run", runner.run_here)


def check(capsys, number, *args):
    rc = exercise.main(["check", number, *args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def lines(out: str) -> dict:
    """{check name: "pass" or "FAIL"} from check's output."""
    return {m.group(2): m.group(1) for m in map(RESULT.match, out.splitlines()) if m}


def verdict(out: str) -> tuple[int, int]:
    m = VERDICT.search(out)
    assert m, f"no verdict line in:\n{out}"
    return int(m.group(3)), int(m.group(4))


def write(folder, learner: Learner):
    path = folder / f"step{learner.step}.py"
    path.write_text(write_file(learner), encoding="utf-8")
    return path


def cli(*args, timeout=150):
    """`python -m course.exercise ...` in a process of its own, from the repository's root."""
    return subprocess.run([sys.executable, "-m", "course.exercise", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


# --- the solution, a fresh skeleton, start -------------------------------------------------------------

@pytest.mark.parametrize("number", NUMBERS)
def test_the_solution_passes_every_check(number, capsys, here):
    rc, out, _ = check(capsys, number, "--solution")
    assert rc == 0, out
    assert lines(out) == {name: "pass" for name in STEPS[number].checks}, out
    assert VERDICT.search(out).group(2) == "the solution"
    assert verdict(out) == (len(STEPS[number].checks),) * 2


@pytest.mark.slow
@pytest.mark.parametrize("number", NUMBERS)
def test_the_solution_trains_within_the_band(number, corpus_text):
    proc = cli("check", number, "--solution", "--train", timeout=3600)  # all the CPU's threads, as a learner's run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^pass  training", proc.stdout, re.M), proc.stdout
    passed, total = verdict(proc.stdout)
    assert passed == total == len(STEPS[number].checks) + 1, proc.stdout
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("number", NUMBERS)
def test_a_fresh_skeleton_fails_as_not_written_yet(number, tmp_path, capsys, here):
    assert exercise.main(["start", number, "--folder", str(tmp_path)]) == 0
    path = tmp_path / f"step{number}.py"
    assert f"wrote {path}" in capsys.readouterr().out
    rc, out, err = check(capsys, number, "--folder", str(tmp_path))
    assert rc == 1, out + err
    failed = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert failed and all(": not written yet: " in line for line in failed), out  # no other kind of failure
    assert str(path) in out


def test_start_never_overwrites(tmp_path, capsys):
    assert exercise.main(["start", "05", "--folder", str(tmp_path)]) == 0
    path = tmp_path / "step05.py"
    work = path.read_text() + "\n# mine\n"
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


# --- the skeleton gives the idea, never the answer ---------------------------------------------------

def imported_names(text: str) -> set:
    return {alias.name for node in ast.walk(ast.parse(text)) if isinstance(node, ast.ImportFrom)
            and node.module and node.module.startswith("gpt") for alias in node.names}


GIVEN_HELPERS = {"init_weights", "rope_angles"}  # introduced with a step, and used by the code it gives


@pytest.mark.parametrize("number", NUMBERS)
def test_a_skeleton_imports_only_what_the_learner_is_not_asked_to_write(number):
    names = imported_names(skeleton(number))
    step = STEPS[number]
    assert not names & set(step.names()), "it imports what the learner writes"
    later = {n for n in names if INTRODUCED.get(n, "00") > number}
    assert not later, f"it imports a later step's {later}"
    this = {n for n in names if INTRODUCED.get(n) == number} - GIVEN_HELPERS
    assert not this, f"it imports this step's own {this}"


def test_step_01_gets_no_attention_helper_and_step_05_no_later_class():
    assert not imported_names(skeleton("01")) & {"causal_attention", "causal_attention_weights", "causal_mask"}
    assert not imported_names(skeleton("05")) & {"PreLNBlock", "DropoutBlock", "GPT", "CausalSelfAttention"}


@pytest.mark.parametrize("number", NUMBERS)
def test_a_skeleton_says_the_idea_never_the_line(number):
    text = skeleton(number)
    messages = " ".join(re.findall(r'raise NotImplementedError\((.*?)\)$', text, re.S | re.M))
    answer = [line.strip() for body in solution_bodies(number).values() for line in body.splitlines()
              if len(line.strip()) >= 12 and not line.strip().startswith("#")]
    assert answer
    leaked = [line for line in answer if line in messages or line in " ".join(STEPS[number].ideas.values())]
    assert not leaked, leaked
    compile(text, f"step{number}.py", "exec")


def test_step_09_says_which_rope_pairs_in_words():
    text = skeleton("09")
    assert "i + hs/2" in text and "GPT-NeoX" in text and "(2i, 2i+1)" in text


# --- the hint ladder ------------------------------------------------------------------------------------

NO_MLP_RESIDUAL = Learner("05 no residual around the MLP", "05", {"ResidualBlock.forward": """
    x = x + self.sa(x)
    return self.ffwd(x)
"""})


def test_the_ladder_gives_the_idea_then_more_then_the_lessons_code(tmp_path, capsys, here):
    write(tmp_path, NO_MLP_RESIDUAL)
    answer = "x = x + self.ffwd(x)"
    _, idea, _ = check(capsys, "05", "--folder", str(tmp_path))
    assert "where: ResidualBlock at body.0 returns self.ffwd's output" in idea
    assert "idea: each sub-layer adds its output to the stream it read" in idea
    assert "more:" not in idea and answer not in idea
    assert "--hint says more" in idea
    _, more, _ = check(capsys, "05", "--folder", str(tmp_path), "--hint")
    assert "more: follow x through your forward" in more and answer not in more
    _, solution, _ = check(capsys, "05", "--folder", str(tmp_path), "--show-solution")
    assert "the lesson's ResidualBlock.forward:" in solution and answer in solution


def test_the_same_mistake_is_explained_once(tmp_path, capsys, here):
    write(tmp_path, Learner("01 scaled by n_embd", "01", {"AttentionHead.forward": """
        B, T, C = x.shape
        wei = self.query(x) @ self.key(x).transpose(-2, -1) * C ** -0.5
        wei = wei.masked_fill(torch.tril(torch.ones(T, T)) == 0, float("-inf")).softmax(-1)
        return wei @ self.value(x)
    """}))
    _, out, _ = check(capsys, "01", "--folder", str(tmp_path))
    assert out.count("idea:") == 1 and "(the same mistake as above)" not in out  # one check fails: at other sizes
    assert lines(out)["at other sizes"] == "FAIL" and list(lines(out).values()).count("FAIL") == 1, out


# --- tool errors: exit 2, a message, no traceback ---------------------------------------------------

def tool_error(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as stopped:
        exercise.main(list(argv))
    assert stopped.value.code == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return captured.err


def test_a_step_that_does_not_exist(capsys):
    err = tool_error(capsys, "check", "12")
    assert "there is no step 12" in err and "00, 01" in err


def test_a_missing_file_says_to_start_first(tmp_path, capsys):
    err = tool_error(capsys, "check", "05", "--folder", str(tmp_path))
    assert str(tmp_path / "step05.py") in err and "python -m course.exercise start 05" in err


def test_a_syntax_error_shows_the_file_the_line_and_its_text(tmp_path, capsys):
    text = write_file(Learner("lecture", "01"))
    broken = "        k = = self.key(x)  # (B, T, hs)"
    text = text.replace("        k = self.key(x)  # (B, T, hs)", broken)
    lineno = text.splitlines().index(broken) + 1
    path = tmp_path / "step01.py"
    path.write_text(text)
    err = tool_error(capsys, "check", "01", "--folder", str(tmp_path))
    assert f"error: {path}, line {lineno}: " in err and broken.strip() in err


def test_an_error_at_import_names_the_learners_line(tmp_path, capsys, here):
    text = write_file(Learner("lecture", "02")) + "\n\nprint(torch.zeros(2) @ torch.zeros(3))  # my smoke test\n"
    path = tmp_path / "step02.py"
    path.write_text(text)
    err = tool_error(capsys, "check", "02", "--folder", str(tmp_path))
    assert f"{path} fails when it is imported, line {len(text.splitlines())}: RuntimeError" in err


def test_a_file_that_is_not_utf8(tmp_path, capsys):
    (tmp_path / "step03.py").write_bytes(write_file(Learner("lecture", "03")).encode() + b"\n# caf\xe9\n")
    assert re.search(r"utf-?8", tool_error(capsys, "check", "03", "--folder", str(tmp_path)), re.I)


def test_a_wrong_signature_names_the_missing_argument(tmp_path, capsys, here):
    write(tmp_path, Learner("no head_size", "01", classes={"AttentionHead": """
class AttentionHead(nn.Module):
    def __init__(self, n_embd: int):
        super().__init__()

    def forward(self, x):
        return x
"""}))
    err = tool_error(capsys, "check", "01", "--folder", str(tmp_path))
    assert "AttentionHead.__init__" in err and "add head_size" in err


def test_a_missing_class_says_to_keep_the_names(tmp_path, capsys, here):
    path = write(tmp_path, Learner("lecture", "05"))
    path.write_text(path.read_text().replace("class MLP(", "class MyMLP("))
    assert "no MLP" in tool_error(capsys, "check", "05", "--folder", str(tmp_path))


def test_an_error_in_the_learners_code_names_their_line(tmp_path, capsys, here):
    path = write(tmp_path, Learner("typo", "01", {"AttentionHead.forward": """
        k = self.key(x)
        q = self.querry(x)
        return (q @ k.transpose(-2, -1)).softmax(-1) @ self.value(x)
    """}))
    lineno = next(i for i, line in enumerate(path.read_text().splitlines(), 1) if "self.querry(x)" in line)
    _, out, err = check(capsys, "01", "--folder", str(tmp_path))
    assert f"AttributeError: 'AttentionHead' object has no attribute 'querry' (your line {lineno}: " \
           "q = self.querry(x))" in out
    assert "Traceback" not in out + err


# --- the results file, and status ---------------------------------------------------------------------

def test_json_results_hold_what_autograders_read(tmp_path, capsys, here):
    write(tmp_path, NO_MLP_RESIDUAL)
    results = tmp_path / "results.json"
    rc, out, _ = check(capsys, "05", "--folder", str(tmp_path), "--json", str(results))
    assert rc == 1
    data = json.loads(results.read_text())
    assert isinstance(data["score"], (int, float)) and isinstance(data["max_score"], (int, float))
    assert isinstance(data["tests"], list) and len(data["tests"]) == len(STEPS["05"].checks)
    for test in data["tests"]:
        assert {"name", "score", "max_score", "output"} <= set(test), test
        assert isinstance(test["name"], str) and isinstance(test["output"], str)
        assert 0 <= test["score"] <= test["max_score"] and test["status"] in ("passed", "failed")
        assert (test["status"] == "passed") == (test["score"] == test["max_score"] > 0)
    assert data["score"] == sum(t["score"] for t in data["tests"]) < data["max_score"]
    failed = next(t for t in data["tests"] if t["status"] == "failed")
    assert "where: ResidualBlock at body.0" in failed["output"] and "idea:" in failed["output"]


def test_json_results_say_why_when_nothing_could_be_checked(tmp_path, capsys):
    results = tmp_path / "results.json"
    tool_error(capsys, "check", "04", "--folder", str(tmp_path), "--json", str(results))
    data = json.loads(results.read_text())
    assert data["score"] == 0 and data["tests"][0]["score"] == 0 and "start the step first" in data["tests"][0]["output"]


def test_status_shows_every_step(tmp_path, capsys, monkeypatch):
    def here(jobs, on_step=None, **_):
        for number, path in jobs:
            on_step(number, runner.run_here(number, path))
    monkeypatch.setattr(runner, "run_steps", here)
    trained = write(tmp_path, Learner("lecture", "00"))
    (tmp_path / ".progress.json").write_text(json.dumps({"00": {"sha256": cli_module.digest(trained), "trained": True}}))
    exercise.main(["start", "03", "--folder", str(tmp_path)])
    (tmp_path / "step04.py").write_text("def oops(:\n")
    assert exercise.main(["status", "--folder", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line[:2]: line for line in out if line[:2] in STEPS}
    assert list(rows) == NUMBERS
    assert "8 of 8 checks pass; trained within the band" in rows["00"]
    assert "not written yet" in rows["03"] and "can't be checked" in rows["04"]
    assert all("not started: python -m course.exercise start" in rows[n] for n in ("01", "02", "05", "09"))
    assert "1 of 10 steps pass every check" in out[-1]


def test_the_classroom_workflow_grades_every_step_with_its_points():
    text = (ROOT / "docs" / "classroom.md").read_text()
    workflow = re.search(r"```yaml\n(.*?)```", text, re.S).group(1)
    graders = re.findall(r"- name: .*\n\s+id: (step-\d\d)\n\s+uses: education/autograding-command-grader@v1\n"
                         r"\s+with:\n(?:\s+.*\n)*?\s+command: (.*)\n\s+timeout: \d+\n\s+max-score: (\d+)", workflow)
    assert [g[0] for g in graders] == [f"step-{n}" for n in NUMBERS], graders
    for (ident, command, points), number in zip(graders, NUMBERS):
        assert command == f"python -m course.exercise check {number}"
        assert int(points) == sum(POINTS[c] for c in STEPS[number].checks)
        assert f'{ident.upper()}_RESULTS: "${{{{steps.{ident}.outputs.result}}}}"' in workflow
    assert "runners: " + ",".join(g[0] for g in graders) in workflow


# --- the child process: a time limit nothing can stop, results as they come -----------------------------

SWALLOWS = Learner("retries until it works", "01", {"AttentionHead.forward": """
    while True:  # retry until it works
        try:
            return (self.query(x) @ self.key(x).transpose(-2, -1)).softmax(-1) @ self.valu(x)
        except Exception:
            continue
"""})
PRINTS = Learner("prints as it goes", "01", {"AttentionHead.forward": """
    while True:
        print("q, k, v:", x.shape)
"""})


def ended(tmp_path, learner, limit=None):
    """`check` on the learner's file in a process of its own: (its stdout, seconds it took)."""
    write(tmp_path, learner)
    started = time.monotonic()
    proc = cli("check", "01", "--folder", str(tmp_path), *(["--time-limit", str(limit)] if limit else []))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc.stdout, time.monotonic() - started


@pytest.mark.parametrize("learner", [SWALLOWS, PRINTS], ids=["swallows exceptions", "prints forever"])
def test_a_runaway_forward_is_ended_at_the_time_limit(learner, tmp_path):
    results = []
    outcome = runner.run("01", str(write(tmp_path, learner)), limit=1,
                         on_result=lambda r: results.append((time.monotonic(), r)))
    assert [r.name for _, r in results] == list(STEPS["01"].checks)
    (first, layers), (last, shapes) = results[0], results[1]
    assert layers.passed  # printed as it finished, seconds before the limit ended the child
    assert last - first > 0.7
    assert outcome.stopped == "shapes" and "still running after 1 s" in shapes.error
    assert all(r.error == "not run: the checking stopped before it" for _, r in results[2:])
    if learner is PRINTS:
        assert "printing without end" in shapes.error and "q, k, v: torch.Size" in shapes.error


@pytest.mark.slow
@pytest.mark.parametrize("learner", [SWALLOWS, PRINTS], ids=["swallows exceptions", "prints forever"])
def test_a_runaway_forward_ends_the_check_within_90_seconds(learner, tmp_path):
    out, seconds = ended(tmp_path, learner)
    assert seconds < 90, seconds
    assert "FAIL  shapes: still running after 60 s for the file and all of the checks" in out
    assert "an endless loop" in out and verdict(out) == (1, len(STEPS["01"].checks))


@pytest.mark.slow
def test_the_check_command_runs_the_learners_code_in_a_process_of_its_own(tmp_path):
    """The whole command, as a learner types it: a line per check, then the verdict; exit 0."""
    write(tmp_path, Learner("lecture", "04"))
    proc = cli("check", "04", "--folder", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert lines(proc.stdout) == {name: "pass" for name in STEPS["04"].checks}
    assert "Every check passes" in proc.stdout and "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the child processes in /proc")
def test_ctrl_c_ends_the_check_and_its_child(tmp_path):
    import os
    import signal

    write(tmp_path, SWALLOWS)
    proc = subprocess.Popen([sys.executable, "-m", "course.exercise", "check", "01", "--folder", str(tmp_path)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # the command has started; its child runs the checks
    assert line.startswith("step 01"), line
    time.sleep(5)
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err and "Traceback" not in err
    time.sleep(3)
    assert not [pid for pid in children if os.path.exists(f"/proc/{pid}")], "a child outlived the command"

