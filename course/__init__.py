"""The machinery around the lesson: what starts, checks, saves, stops, prints, draws, parallelises,
reports, explores and grades a run, and nothing a learner needs to understand the loss table (that
is gpt/).

The rule: course may import gpt; gpt never imports course.

A program this repository starts (a task script, python -m course.X) imports course first, before gpt
and PyTorch, and so gets ready for a run: it says it is starting, Ctrl-C while it starts ends it with
one line, and the CPU kernels are chosen (course/startup.py). Any other program importing course gets
nothing but names.

    run.py         a training run: tasks 00-06 whole (run_task), tasks 07 and 09 (LongRun)
    config.py      the settings of each step, as flags      presets.py, search.py   task 07's and 09's runs, grids
    hooks.py       what a long run attaches to the loop     steps.py      mixed precision, micro-steps, processes
    checkpoint.py  saving, loading, resuming                run_files.py  runs/<task>/: history, pictures, summary
    device.py      cuda, mps or cpu, and their precision    distributed.py  torchrun
    startup.py     a program's first moments                interrupts.py, exits.py  Ctrl-C, SIGTERM, errors
    files.py       atomic writes                            download.py   Tiny Shakespeare, fetched and checked
    timing.py      how long a run will take                 measures.py   python -m course.measures
    plots.py, attention_map.py   pictures                   report.py     python -m course.report
    reference.py   the course's numbers and the bands       compare.py    task 09's --compare A/B
    output.py      task 08's stream on standard output      bench.py, baseline.py  python -m course.bench
    exercise/      python -m course.exercise: the course as exercises, graded
    explore/       python -m course.explore: a trained model's surprise, attention and stream, in the browser
"""

from .startup import prepare_process

prepare_process()
