"""What a check found, and how it is told: a line per check, the hint ladder, and the results file
autograders read.

The ladder: a failing check says what it expected, what came out, where the learner's computation
first departs from the lesson's and the idea that fits (level 1); `--hint` adds where to look and why
(level 2); `--show-solution` adds the lesson's own code for the method at fault (level 3). The lesson's
lines appear only at level 3.
"""

import json
from dataclasses import asdict, dataclass

LEVELS = {"idea": 1, "hint": 2, "solution": 3}


@dataclass
class Finding:
    """Where the learner's computation departs from the lesson's, and what kind of difference it is."""
    kind: str  # one word a teacher or a test can count: nan, scale, sign, transpose, mask, unused, length...
    where: str  # which tensor, which position and head, what differs: "your attention weights, head 0, row 0: NaN"
    idea: str  # the idea that fits the symptom (never the line that fixes it)
    more: str = ""  # --hint: where to look, and why
    solution: str = ""  # "Class.method": the lesson's code --show-solution prints


class CheckFailed(Exception):
    def __init__(self, expected: str, got: str, finding: Finding | None = None):
        super().__init__(f"expected {expected}; got {got}")
        self.expected, self.got, self.finding = expected, got, finding


def expect(condition: bool, expected: str, got: str, finding: Finding | None = None) -> None:
    if not condition:
        raise CheckFailed(expected, got, finding)


@dataclass
class Result:
    name: str
    passed: bool
    points: float
    max_points: float
    expected: str = ""
    got: str = ""
    error: str = ""  # when the check could not finish: not written yet, an exception, the time limit
    finding: Finding | None = None
    note: str = ""  # on a pass: how the work was matched, where that is worth saying
    printed: str = ""  # the first lines the learner's code printed during the check
    lesson_code: str = ""  # the lesson's code for the method at fault (shown at level 3)

    def lines(self, level: int = 1, brief: bool = False) -> list[str]:
        """The result as printed: a line, and for a failure where it departs and the ladder's rungs up to
        level; brief: the same mistake was explained above, so only where it shows here."""
        if self.passed:
            return [f"pass  {self.name}" + (f" ({self.note})" if self.note else "")]
        head = f"FAIL  {self.name}: " + (self.error or f"expected {self.expected}; got {self.got}")
        out = [head]
        if self.finding is not None and brief and self.finding.kind == "not-written":
            return out
        if self.finding is not None:
            out.append(f"      where: {self.finding.where}")
            if brief:
                out.append("      (the same mistake as above)")
                return out + ([f"      your code printed: {self.printed}"] if self.printed else [])
            out.append(f"      idea: {self.finding.idea}")
            if level >= 2 and self.finding.more:
                out.append(f"      more: {self.finding.more}")
            if level >= 3 and self.lesson_code:
                out.append(f"      the lesson's {self.finding.solution}:")
                out += [f"          {line}" for line in self.lesson_code.splitlines()]
        if self.printed:
            out.append("      your code printed: " + self.printed.replace("\n", "\n      | "))
        return out

    def to_json(self) -> dict:
        return asdict(self)


def from_json(data: dict) -> Result:
    finding = data.pop("finding", None)
    return Result(**data, finding=Finding(**finding) if finding else None)


def gradescope(results: list[Result], number: str, level: int, summary: str) -> dict:
    """Gradescope's results.json: the score, and a test per check with its points and its output."""
    return {
        "score": sum(r.points for r in results),
        "max_score": sum(r.max_points for r in results),
        "output": summary,
        "tests": [{"name": f"step {number}: {r.name}", "score": r.points, "max_score": r.max_points,
                   "status": "passed" if r.passed else "failed", "output": "\n".join(r.lines(level))}
                  for r in results],
    }


def write_json(path, data: dict) -> None:
    from ..files import atomic_write

    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
