"""The grader's mutation suite: every wrong learner file fails the check it names, with the diagnosis it
names; every right one, however it is written, passes every check (tests/exercise_learners.py has the
files and says where they come from).

It runs in this process, with the diagnosis strict (an error inside it fails the test instead of
leaving the check without a finding): the child process that the command runs checks in is tested in
test_exercise.py.
"""

import pytest

from exercise_learners import CORRECT, ISSUE_KINDS, WRONG
from learner_files import LESSON, Learner, write_file

from course.exercise import lesson
from course.exercise.grading import grade
from course.exercise.learner import check_signatures, load_learner
from course.exercise.steps import STEPS


@pytest.fixture(autouse=True)
def strict(monkeypatch):
    monkeypatch.setattr(lesson, "STRICT", True)


def results(learner: Learner, tmp_path, names=None) -> dict:
    path = tmp_path / f"step{learner.step}.py"
    path.write_text(write_file(learner), encoding="utf-8")
    module = load_learner(path)
    check_signatures(STEPS[learner.step], module)
    return {r.name: r for r in grade(learner.step, module, names=names)}


def describe(result) -> str:
    return "\n".join(result.lines(2))


@pytest.mark.parametrize("learner", WRONG, ids=[w.name for w in WRONG])
def test_a_wrong_implementation_fails_with_its_diagnosis(learner, tmp_path):
    expected = {learner.check: learner.kind, **learner.also}
    assert set(expected) <= set(STEPS[learner.step].checks), expected
    found = results(learner, tmp_path, names=[n for n in STEPS[learner.step].checks if n in expected])
    for name, kind in expected.items():
        result = found[name]
        assert not result.passed, f"{learner.name} passed {name}"
        assert result.finding is not None, f"{learner.name}: no diagnosis from {name}\n{describe(result)}"
        assert result.finding.kind == kind, f"{learner.name}: {name} finds {result.finding.kind}, not {kind}\n" \
                                            f"{describe(result)}"
        assert result.finding.idea, describe(result)
    assert learner.words in found[learner.check].finding.where, describe(found[learner.check])


@pytest.mark.parametrize("learner", CORRECT, ids=[c.name for c in CORRECT])
def test_a_right_implementation_written_another_way_passes(learner, tmp_path):
    found = results(learner, tmp_path)
    failed = [describe(r) for r in found.values() if not r.passed]
    assert not failed, "\n".join(failed)
    assert list(found) == list(STEPS[learner.step].checks)
    if learner.note:
        assert any(learner.note in r.note for r in found.values()), [r.note for r in found.values()]


@pytest.mark.parametrize("number", list(STEPS))
def test_each_step_written_the_lectures_way_passes(number, tmp_path):
    found = results(Learner("the lecture's way", number), tmp_path)
    assert all(r.passed for r in found.values()), "\n".join(describe(r) for r in found.values() if not r.passed)
    assert not any(r.note for r in found.values())  # matched by its names, nothing to remark


def test_the_suite_is_as_large_as_promised():
    assert len(WRONG) >= 40 and len(CORRECT) >= 12
    assert {w.step for w in WRONG} == set(STEPS), "a wrong file for every step"
    assert len({w.name for w in WRONG + CORRECT}) == len(WRONG + CORRECT), "names are unique"
    assert set(LESSON) == set(STEPS)


def test_every_kind_of_mistake_the_grader_is_for_has_a_file():
    names = {x.name: x for x in WRONG + CORRECT}
    for kind, covered_by in ISSUE_KINDS.items():
        assert covered_by, kind
        for name in covered_by:
            assert name in names, f"{kind}: no file named {name!r}"
            assert names[name].correct == kind.startswith("correct:"), (kind, name)


@pytest.mark.parametrize("broken", ["a scale named by the wrong size", "a NaN row taken for a missing mask"])
def test_the_suite_catches_a_broken_diagnosis(broken, monkeypatch, tmp_path):
    """The suite watches the diagnosis: break it, and the files whose mistakes it then misnames fail."""
    from course.exercise import attention, diagnosis

    if broken == "a scale named by the wrong size":
        monkeypatch.setattr(attention, "scale_words", lambda factor, hs, C: f"1/sqrt(head_size) = 1/sqrt({hs})")
        learner = next(w for w in WRONG if w.name == "01 scaled by n_embd (the lecture's bug)")
    else:
        def no_nan_rows(given, weights, name, solution):  # reads the mask, but never looks for all-masked rows
            found = original(given.nan_to_num(neginf=0.0), weights, name, solution)
            return found
        original = attention.mask_problem
        monkeypatch.setattr(diagnosis, "mask_problem", no_nan_rows)
        learner = next(w for w in WRONG if w.name == "01 the first row all masked")
    with pytest.raises(AssertionError):
        test_a_wrong_implementation_fails_with_its_diagnosis(learner, tmp_path)
