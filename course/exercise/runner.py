"""The learner's code runs in a process of its own, so that the checking always answers.

`run` starts a child with multiprocessing's spawn method (the one start method every platform has,
Windows included), which imports the learner's file and runs the step's checks, sending each result
back the moment it is known; the parent prints it. The time limit is the parent's: when it passes,
the parent ends the child, which no code in the child can catch or delay (an `except Exception:` in a
retry loop, a print without end, a thread of its own). What the learner's code prints is kept up to a
bound and counted beyond it. `run_steps` checks several steps in one child (for `status`), each with
its own time limit.

The messages from the child: ("ready",) once PyTorch is imported; per step, ("step", number), then
("start", name) before each check and ("result", dict) after it; ("printing", count, first) while a
check prints without end; ("line", text) for each line of --train's loss table; ("error", text) for
a mistake in the file itself (a missing class, a wrong signature, an error while it is imported);
("done",) when the step is over. ("crash", text) is a failure of the checking itself.
"""

import multiprocessing
import os
import signal
import sys
import time
from dataclasses import dataclass, field

from gpt.errors import UserError

from .results import Result, from_json
from .steps import POINTS, STEPS

START_LIMIT = 300  # seconds for the child to import PyTorch: up to a minute on a first start after installing it
TIME_LIMIT = 60  # seconds for the learner's file and all of a step's checks
TRAIN_LIMIT = 1800  # seconds for --train's run beyond four times the band's own time


@dataclass
class Run:
    """What became of one step's checking."""
    results: list = field(default_factory=list)
    error: str = ""  # a mistake in the file itself, or a failure of the checking: no checks ran
    stopped: str = ""  # the check that was running when the time limit ended the child, if it did


def child(conn, jobs: list, solution: bool, train: bool, level: int, root: str) -> None:
    """The child's whole life: quiet output, then for each (step, file) the file and the checks."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it ends this process
    sys.path.insert(0, root)
    from .grading import Bounded

    sys.stdout = sys.stderr = Bounded(keep=0)  # what runs outside a check prints nowhere, and fills no memory
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):  # and what bypasses sys.stdout (C code, os.write) doesn't reach the terminal
        os.dup2(devnull, fd)
    try:
        prepare([number for number, _ in jobs])  # the slow imports, before the clock starts
        conn.send(("ready",))
        for number, path in jobs:
            conn.send(("step", number))
            one_step(conn, number, path, solution, train, level)
            conn.send(("done",))
    except BaseException:  # a failure of the checking itself: say so, rather than end without a word
        import traceback

        conn.send(("crash", traceback.format_exc(limit=-3)))


def prepare(numbers: list) -> None:
    """Import PyTorch, the checks and the steps' task scripts: the grader's own start-up, which the time
    limit for the learner's code doesn't count."""
    import importlib
    from pathlib import Path

    from . import checks  # noqa: F401  (and with it torch and the lesson)
    from ..reference import script

    for number in numbers:
        task = STEPS[number].task if number != "08" else "task07"
        importlib.import_module(Path(script(task)).stem)


def one_step(conn, number, path, solution, train, level) -> None:
    from pathlib import Path

    from .grading import grade, solution_namespace, train_check
    from .learner import check_signatures, load_learner

    try:
        if solution:
            learner = solution_namespace(number)
        else:
            learner = load_learner(Path(path))
            check_signatures(STEPS[number], learner)
    except UserError as e:
        conn.send(("error", str(e)))
        return
    on_start = lambda name: conn.send(("start", name))  # noqa: E731
    printing = lambda count, first: conn.send(("printing", count, first))  # noqa: E731
    for result in grade(number, learner, level, notify=printing, on_start=on_start):
        conn.send(("result", result.to_json()))
    if train:
        on_start("training")
        on_line = lambda line: conn.send(("line", line))  # noqa: E731
        conn.send(("result", train_check(number, learner, level, on_line).to_json()))


def run(number: str, path: str, solution: bool = False, train: bool = False, level: int = 1,
        limit: float = TIME_LIMIT, on_result=None, on_line=None) -> Run:
    """The step's checks on the learner's file in a child process; on_result(result) as each arrives,
    on_line(text) for each line of --train's loss table."""
    return run_steps([(number, path)], solution, train, level, limit, on_result, on_line)[number]


def run_here(number: str, path: str, solution: bool = False, train: bool = False, level: int = 1,
             limit: float = TIME_LIMIT, on_result=None, on_line=None) -> Run:
    """`run` in this process, with no time limit: for tests, and for a debugger."""
    from pathlib import Path

    from .grading import grade, solution_namespace, train_check
    from .learner import check_signatures, load_learner

    outcome = Run()
    try:
        learner = solution_namespace(number) if solution else load_learner(Path(path))
        if not solution:
            check_signatures(STEPS[number], learner)
    except UserError as e:
        outcome.error = str(e)
        return outcome
    for result in grade(number, learner, level):
        outcome.results.append(result)
        if on_result:
            on_result(result)
    if train:
        outcome.results.append(train_check(number, learner, level, on_line))
        if on_result:
            on_result(outcome.results[-1])
    return outcome


def run_steps(jobs: list, solution: bool = False, train: bool = False, level: int = 1, limit: float = TIME_LIMIT,
              on_result=None, on_line=None, on_step=None) -> dict:
    """Several steps' checks, one after the other in one child: {step: Run}. A step that runs out of
    time ends the child; the steps after it go on in a fresh one. on_step(number, run) as each ends."""
    outcomes, left = {}, list(jobs)
    while left:
        for number, outcome in checking(left, solution, train, level, limit, on_result, on_line):
            outcomes[number] = outcome
            left = [job for job in left if job[0] != number]
            if on_step:
                on_step(number, outcome)
    return outcomes


def checking(jobs, solution, train, level, limit, on_result, on_line):
    """Yield (step, Run) for the jobs, in order, from one child, until they are done or one runs out of
    time (that one is the last yielded: the caller starts another child for the rest)."""
    from ..reference import ROOT

    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=child, args=(send, jobs, solution, train, level, str(ROOT)), daemon=True)
    process.start()
    send.close()
    number, outcome, current, printed = jobs[0][0], Run(), "importing your file", None
    deadline = time.monotonic() + START_LIMIT
    try:
        while True:
            if not receive.poll(max(0.0, deadline - time.monotonic())):
                if time.monotonic() < deadline:
                    continue
                outcome.stopped = current
                finish(outcome, names_of(number, train), current, why(current, printed, limit, number), on_result)
                yield number, outcome
                return
            try:
                message = receive.recv()
            except EOFError:  # the child ended without a word: the learner's code ended the process
                process.join(5)
                finish(outcome, names_of(number, train), current, f"your code ended the checking process (exit code "
                                                                   f"{process.exitcode}) before this check finished",
                       on_result)
                yield number, outcome
                return
            kind = message[0]
            if kind in ("ready", "step"):
                deadline = time.monotonic() + limit
                if kind == "step":
                    number, outcome, current, printed = message[1], Run(), "importing your file", None
            elif kind == "start":
                current, printed = message[1], None
                if current == "training":
                    deadline = time.monotonic() + train_limit(number)
            elif kind == "printing":
                printed = (message[1], message[2])
            elif kind == "line" and on_line:
                on_line(message[1])
            elif kind == "result":
                result = from_json(message[1])
                outcome.results.append(result)
                if on_result:
                    on_result(result)
            elif kind == "error":
                outcome.error = message[1]
            elif kind == "crash":
                outcome.error = f"the checking itself failed, which is a bug in it (please report it):\n{message[1]}"
                yield number, outcome
                return
            elif kind == "done":
                yield number, outcome
                if number == jobs[-1][0]:
                    process.join(10)  # it ends by itself now; a forced end would leave its resources behind
                    return
    finally:
        stop(process)
        receive.close()


def names_of(number: str, train: bool) -> list:
    return list(STEPS[number].checks) + (["training"] if train else [])


def why(current: str, printed, limit: float, number: str) -> str:
    """Why the time limit ended the checking, in the learner's terms."""
    if current == "importing your file":
        return f"importing your file took longer than {limit:g} s: code at the top level of the file that runs without end?"
    if current == "training":
        return f"training still running after {train_limit(number):g} s"
    text = f"still running after {limit:g} s for the file and all of the checks"
    if printed:
        text += f", printing without end ({printed[0]:,} characters so far; the first: {printed[1][:120]!r})"
    return text + ": an endless loop, or far too much work for these small sizes"


def finish(outcome: Run, names: list, current: str, reason: str, on_result=None) -> None:
    """The check that was running fails, saying why; the ones after it were not run."""
    done = {r.name for r in outcome.results}
    running = current if current in names and current not in done else next((n for n in names if n not in done), None)
    for name in names:
        if name in done:
            continue
        error = reason if name == running else "not run: the checking stopped before it"
        outcome.results.append(Result(name, False, 0, POINTS.get(name, 1), error=error))
        if on_result:
            on_result(outcome.results[-1])


def stop(process) -> None:
    """End the child: terminate (SIGTERM; TerminateProcess on Windows), then kill if it is still there."""
    if process.is_alive():
        process.terminate()
        process.join(3)
    if process.is_alive():
        process.kill()
        process.join(3)


def train_limit(number: str) -> float:
    """Four times the band's own run time, and half an hour more: a slow laptop still finishes."""
    from ..reference import band

    reference, _ = band(STEPS[number].task)
    return 4 * (reference or {}).get("wall_mean", 60) + TRAIN_LIMIT
