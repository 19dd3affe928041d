"""Do the course yourself: every step as an exercise that this repository grades.

    python -m course.exercise start 05                  # writes mine/step05.py: step 05's classes, their bodies to write
    python -m course.exercise check 05                  # a line per check as it finishes: pass, or what went wrong
    python -m course.exercise check 05 --hint           # a failing check also says where to look
    python -m course.exercise check 05 --show-solution  # and shows the lesson's code for the method at fault
    python -m course.exercise check 05 --train          # then trains your model as task05.py does, against the band
    python -m course.exercise check 05 --json results.json   # also writes the results for an autograder
    python -m course.exercise status                    # every step: not started, or how many checks pass

The skeleton is cut from the solution's own source (skeleton.py): the classes the step introduces, with
their signatures, docstrings and shape comments, each body to write replaced by a NotImplementedError
that names the idea. It imports the lesson's earlier steps, never this step's answer or a later step's.

The checks (checks.py) are the properties the lessons claim: the outputs of the lesson's model given
its weights, at several lengths and, for the step's classes alone, at other sizes than the step's own;
causality; the loss at initialisation; gradients for every parameter; where dropout is applied, and
that eval switches it off; the cached path from a non-zero start, with a chunk after a prompt and past
a full window; sampling as a distribution; RoPE's rotation from a start position. The lesson's weights
go into the learner's layers matched by what they are, not by their names (weights.py), so that the
lecture's own structures pass (a ModuleList of heads, a registered tril, separately named layers). A
check that fails says where the learner's computation first departs from the lesson's, which tensor,
position and head, and what kind of difference it is (diagnosis.py, attention.py).

The learner's code runs in a process of its own (runner.py), which the time limit ends however the
code behaves; each check's line is printed as it finishes; what the code prints is bounded. What the
checks don't prove: that the code is fast, or right on inputs unlike theirs. docs/exercises.md says
more, and docs/classroom.md sets the grader up for a class.

The package is machinery: it imports gpt, never the other way round.

    cli.py        the commands                          steps.py      each step: what to write, its checks, points
    skeleton.py   the file `start` writes               learner.py    the learner's file, read and imported
    runner.py     the child process and its time limit  grading.py    the checks run into results, --train
    results.py    a result's lines, results.json        lesson.py     the step's model, built twice and matched
    weights.py    the lesson's weights into the learner's layers, by what they are
    checks.py     the model's checks, dropout           cached.py     the cached path (07, 08, 09)
    rope.py       RoPE (09)                             loop.py       estimate_loss and generate (00)
    trace.py      a forward, recorded                   diagnosis.py  where a forward departs from the lesson's
    attention.py  inside attention                      differences.py  how one tensor differs from another
"""


def main(argv=None) -> int:
    from .cli import main as run

    return run(argv)
