"""python -m course.exercise start|check|status: the commands, and how their results are printed."""

import hashlib
import json
import os
from pathlib import Path

from gpt.errors import UserError

from .learner import learner_file, read_learner
from .results import LEVELS, gradescope, write_json
from .steps import STEPS, TITLES

PROGRESS = ".progress.json"  # in the learner's folder: each step's last --train, with the file it trained


def main(argv=None) -> int:
    from ..config import Parser
    from ..exits import friendly_errors
    from . import __doc__ as doc

    parser = Parser(prog="python -m course.exercise", description=doc)
    parser.add_argument("action", choices=("start", "check", "status"))
    parser.add_argument("step", nargs="?", help=f"the step: {', '.join(STEPS)} (not for status)")
    parser.add_argument("--folder", default="mine", help="where your files are (default: %(default)s)")
    parser.add_argument("--solution", action="store_true", help="check: the repository's own classes")
    parser.add_argument("--train", action="store_true", help="check: also train your model as the task does")
    parser.add_argument("--hint", action="store_true", help="check: a failing check says more: where to look")
    parser.add_argument("--show-solution", action="store_true",
                        help="check: a failing check also shows the lesson's code for the method at fault")
    parser.add_argument("--json", metavar="FILE", help="check: also write the results for an autograder (Gradescope's "
                                                        "results.json format)")
    parser.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                        help="check: seconds for your file and all of the step's checks (default: 60)")
    args = parser.parse_args(argv)
    if args.action == "status":
        if args.step:
            parser.error("status takes no step: it shows every one")
        with friendly_errors():
            return status(Path(args.folder))
    if not args.step:
        parser.error(f"{args.action} needs a step: {', '.join(STEPS)}")
    number = args.step.zfill(2)
    if number not in STEPS:
        parser.error(f"there is no step {args.step}; the steps are {', '.join(STEPS)}")
    level = LEVELS["solution"] if args.show_solution else LEVELS["hint"] if args.hint else LEVELS["idea"]
    with friendly_errors():
        if args.action == "start":
            return start(number, Path(args.folder))
        return check(number, Path(args.folder), args.solution, args.train, level, args.json, args.time_limit)


def start(number: str, folder: Path) -> int:
    from ..files import atomic_write
    from .skeleton import skeleton

    path = learner_file(folder, number)
    if path.exists():
        print(f"{path} already exists, and holds your work: it was left as it is. Check it with: python -m "
              f"course.exercise check {number} (or start afresh elsewhere with --folder DIR)")
        return 0
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(skeleton(number))
    print(f"wrote {path}: write the bodies that raise NotImplementedError, then: python -m course.exercise check {number}")
    return 0


def check(number: str, folder: Path, solution: bool = False, train: bool = False, level: int = 1,
          json_path: str | None = None, limit: float | None = None) -> int:
    from . import runner

    path = learner_file(folder, number)
    whose = "the solution" if solution else str(path)
    try:
        if not solution:
            read_learner(path)  # a missing file or a syntax error, said before anything starts
    except UserError as e:
        tool_error(json_path, number, str(e))
        raise
    limit = limit or runner.TIME_LIMIT
    print(f"step {number}, {TITLES[number]}: checking {whose} ({len(STEPS[number].checks)} checks"
          + (", then training" if train else "") + f"; {limit:g} s at most for the checks)", flush=True)
    shown = set()

    def show(result):  # a mistake whose idea was given above is not explained again
        brief = result.finding is not None and (result.finding.kind, result.finding.idea) in shown
        if result.finding is not None:
            shown.add((result.finding.kind, result.finding.idea))
        print("\n".join(result.lines(level, brief)), flush=True)

    outcome = runner.run(number, str(path), solution, train, level, limit, on_result=show,
                  on_line=lambda line: print(f"      {line}", flush=True))
    if outcome.error:
        tool_error(json_path, number, outcome.error)
        raise UserError(outcome.error)
    results = outcome.results
    passed = sum(r.passed for r in results)
    points, total = sum(r.points for r in results), sum(r.max_points for r in results)
    summary = f"step {number} ({whose}): {passed} of {len(results)} checks pass ({points:g} of {total:g} points)"
    print(f"\n{summary}")
    if passed < len(results) and level < LEVELS["solution"] and any(r.finding for r in results):
        more = "--hint says more; --show-solution also shows the lesson's code" if level < LEVELS["hint"] else \
            "--show-solution also shows the lesson's code for it"
        print(f"A failing check: python -m course.exercise check {number} {more}")
    elif passed == len(results) and not train and not solution:
        print(f"Every check passes. Train your model as task {number} does, and compare it with the band: "
              f"python -m course.exercise check {number} --train")
    if json_path:
        write_json(json_path, gradescope(results, number, level, summary))
    if train and not solution:
        record_training(folder, number, path, results)
    return 0 if passed == len(results) else 1


def tool_error(json_path, number: str, message: str) -> None:
    """A results file that says why nothing could be checked (an autograder shows it to the learner)."""
    if json_path:
        test = {"name": f"step {number}: your file", "score": 0, "max_score": 1, "status": "failed", "output": message}
        write_json(json_path, {"score": 0, "max_score": 1, "output": f"step {number}: {message}", "tests": [test]})


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record_training(folder: Path, number: str, path: Path, results: list) -> None:
    trained = next((r for r in results if r.name == "training"), None)
    if trained is None:
        return
    record = read_progress(folder)
    record[number] = {"sha256": digest(path), "trained": trained.passed, "note": trained.note or trained.got}
    progress = folder / PROGRESS
    try:
        progress.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    except OSError:
        pass  # the record is a convenience for status; the check's verdict stands without it


def read_progress(folder: Path) -> dict:
    try:
        return json.loads((folder / PROGRESS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def status(folder: Path) -> int:
    """Every step: not started, or how many of its checks pass now, and whether --train passed on this file."""
    from . import runner

    print(f"your progress in {folder}{os.sep} (each started step checked now, a minute at most each)\n", flush=True)
    record = read_progress(folder)
    label = lambda number: f"{number}  {TITLES[number]:<44}"  # noqa: E731
    jobs, unreadable = [], {}
    for number in STEPS:
        path = learner_file(folder, number)
        if path.exists():
            try:
                read_learner(path)
                jobs.append((number, str(path)))
            except UserError as e:
                unreadable[number] = str(e).splitlines()[0]
    passing = []

    def line(number, outcome=None):
        path = learner_file(folder, number)
        if number in unreadable or (outcome is not None and outcome.error):
            text = unreadable.get(number) or outcome.error.splitlines()[0]
            return f"{label(number)}can't be checked: {text}"
        if outcome is None:
            return f"{label(number)}not started: python -m course.exercise start {number}"
        results = outcome.results
        passed = sum(r.passed for r in results)
        unwritten = sum(r.error.startswith("not written yet") for r in results)
        trained = record.get(number, {})
        training = ""
        if trained.get("sha256") == digest(path):
            training = "; trained within the band" if trained.get("trained") else "; trained, outside the band"
        if passed == len(results):
            passing.append(number)
        return (f"{label(number)}{passed} of {len(results)} checks pass"
                + (f" ({unwritten} not written yet)" if unwritten else "") + training)

    done = {}
    pending = [n for n in STEPS]

    def flush():  # the steps in order, each as soon as it and the ones before it are known
        while pending and (pending[0] in done or all(pending[0] != n for n, _ in jobs)):
            number = pending.pop(0)
            print(line(number, done.get(number)), flush=True)

    flush()
    runner.run_steps(jobs, on_step=lambda number, outcome: (done.__setitem__(number, outcome), flush()))
    flush()
    print(f"\n{len(passing)} of {len(STEPS)} steps pass every check. A step's details: python -m course.exercise "
          "check NN")
    return 0
