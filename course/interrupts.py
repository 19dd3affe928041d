"""Ctrl-C and SIGTERM: a script stops when asked to, at any moment, with one line and nothing
half-written.

- Outside a run (while the script starts, before its work begins, and after it ends) nothing is being
  written, so there is nothing to clean up: `outside_a_run` prints one line and ends the process at
  once, status 130 (143 for SIGTERM). It raises nothing, so it can't go off inside PyTorch's C++
  start-up (a KeyboardInterrupt raised there aborts the process) or be swallowed by code that catches
  exceptions. course/startup.py installs it before anything imports torch.
- Inside `interrupts_raise()` (a run's work: course/exits.py's friendly_errors, and every atomic
  write) Ctrl-C raises KeyboardInterrupt and SIGTERM raises Terminated, so that clean-ups run and
  the message can say where the last checkpoint is.
- `signals_held()` makes both wait for the end of a few lines that must not be cut in two (making
  a temporary file and noting its name; removing it).
"""

import os
import signal
import sys
import threading
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """SIGTERM (what `timeout`, a cluster's scheduler or a logout sends), raised like Ctrl-C's
    KeyboardInterrupt so that a run stops the same way: clean-ups run, and the message says where the
    last checkpoint is. The scripts exit 143, as a process that SIGTERM ended does."""


STOPS = (signal.SIGINT, signal.SIGTERM)
CTRL_C = []  # set once Ctrl-C has been pressed in this process
BEGUN = []  # set once a run's work has begun: a stop after it is no longer "while starting up"


def interrupted(since: int = 0) -> bool:
    """Whether Ctrl-C was pressed (after the since-th time): an error that follows it (an import it cut
    in half fails in its own way, e.g. numpy's RecursionError) is the Ctrl-C's doing, and is reported
    as the interruption."""
    return len(CTRL_C) > since


def exit_status(stop: KeyboardInterrupt) -> int:
    """What a shell shows for a process that the signal ended: 128 + its number."""
    return 128 + (signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)


def stopped_by(stop: KeyboardInterrupt) -> str:
    return "stopped by SIGTERM" if isinstance(stop, Terminated) else "interrupted"


def in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()  # only it may set signal handlers


def outside_a_run(signum, frame):
    """Ctrl-C or SIGTERM where nothing is being written: one line, and the process ends here."""
    stop = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
    where = "" if BEGUN else " while starting up: nothing was trained or written. Run the command again to start"
    for stream, text in ((sys.stdout, ""), (sys.stderr, f"\n{stopped_by(stop)}{where}\n")):
        try:
            stream.write(text)
            stream.flush()  # what was printed before it, first
        except (OSError, ValueError, AttributeError):  # closed, or None
            pass
    os._exit(exit_status(stop))  # not the usual exit: nothing half-done to clean up, and nothing raised


def raise_keyboard_interrupt(signum, frame):
    CTRL_C.append(signum)
    raise KeyboardInterrupt


def raise_terminated(signum, frame):
    raise Terminated


def ours(handler) -> bool:
    """Whether a signal's handler is Python's own or this module's, which a run may replace; a handler
    someone else set (a test runner, an application embedding this) is left alone."""
    return handler in (signal.default_int_handler, signal.SIG_DFL, outside_a_run, raise_keyboard_interrupt,
                       raise_terminated)


@contextmanager
def interrupts_raise():
    """In the block, Ctrl-C raises KeyboardInterrupt and SIGTERM raises Terminated, so that clean-ups
    run; after it, each acts as it did before."""
    previous = {s: signal.getsignal(s) for s in STOPS} if in_main_thread() else {}
    previous = {s: h for s, h in previous.items() if ours(h)}
    for s in previous:
        signal.signal(s, raise_terminated if s == signal.SIGTERM else raise_keyboard_interrupt)
    BEGUN.append(True)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def signals_held():
    """Ctrl-C and SIGTERM wait until the block ends, then act as they would have: for a few lines
    that must run whole. (Python-level handlers, so that it works whichever thread the signal hits.)"""
    previous = {s: signal.getsignal(s) for s in STOPS} if in_main_thread() else {}
    previous = {s: h for s, h in previous.items() if h is not None}  # None: set outside Python, left alone
    received = []
    for s in previous:
        signal.signal(s, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in received:
            signal.raise_signal(s)


def install_outside_a_run() -> None:
    """Ctrl-C and SIGTERM end the process with a line wherever no run is at work (course/startup.py)."""
    if not in_main_thread():
        return
    for s in STOPS:
        if ours(signal.getsignal(s)):
            signal.signal(s, outside_a_run)
