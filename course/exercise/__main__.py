"""python -m course.exercise: see course/exercise/__init__.py."""

from course.exercise.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
