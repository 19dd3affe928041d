"""Ctrl-C and SIGTERM: a script stops when asked to, with one line and nothing half-written.

- SIGTERM raises Terminated, a KeyboardInterrupt, inside `sigterm_raises()`: left alone it would end
  the process at once, skipping the `finally` that removes a half-written temporary file.
- `signals_held()` makes both wait for the end of a few lines that must not be cut in two (making
  a temporary file and noting its name; removing it).
- `quiet_interrupts()` (run when `gpt` is imported, before anything imports torch) ends a
  KeyboardInterrupt that nothing caught, such as Ctrl-C while torch is still loading, with one line
  and exit status 130 (143 for SIGTERM) instead of a traceback from inside torch.
"""

import os
import signal
import sys
import threading
from contextlib import contextmanager

from .errors import Terminated

STOPS = (signal.SIGINT, signal.SIGTERM)
CTRL_C = []  # set once Ctrl-C has been pressed in this process


def interrupted(since: int = 0) -> bool:
    """Whether Ctrl-C was pressed (after the since-th time): an error that follows it (an import it cut
    in half fails in its own way, e.g. numpy's RecursionError) is the Ctrl-C's doing, and is reported
    as the interruption."""
    return len(CTRL_C) > since


def note_ctrl_c(signum, frame):
    CTRL_C.append(signum)
    raise KeyboardInterrupt


def exit_status(stop: KeyboardInterrupt) -> int:
    """What a shell shows for a process that the signal ended: 128 + its number."""
    return 128 + (signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)


def stopped_by(stop: KeyboardInterrupt) -> str:
    return "stopped by SIGTERM" if isinstance(stop, Terminated) else "interrupted"


def raise_terminated(signum, frame):
    raise Terminated


def in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()  # only it may set signal handlers


@contextmanager
def sigterm_raises():
    """In the block, SIGTERM raises Terminated where it would otherwise end the process on the spot;
    a handler someone else set is left alone."""
    if not in_main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


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


def quiet_interrupts() -> None:
    """Let a KeyboardInterrupt that nothing caught end the script with a line, not a traceback.
    Not in an interactive session, and not where something else set sys.excepthook."""
    if hasattr(sys, "ps1") or sys.flags.interactive or sys.excepthook is not sys.__excepthook__:
        return
    sys.excepthook = excepthook
    if in_main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, note_ctrl_c)  # Python's own, and it remembers that it was pressed


def excepthook(kind, value, tb):
    if not issubclass(kind, KeyboardInterrupt) and not interrupted():
        return sys.__excepthook__(kind, value, tb)
    if not isinstance(value, KeyboardInterrupt):
        value = KeyboardInterrupt()  # what an import cut in half by Ctrl-C raised instead
    while_importing = any(frame_is_module(t) for t in walk(tb.tb_next if tb else None))
    where = " while starting up: nothing was trained or written. Run the command again to start" \
        if while_importing else ""
    try:
        sys.stdout.flush()  # what was printed before it, first
    except (OSError, ValueError, AttributeError):  # closed, or None
        pass
    try:
        sys.stderr.write(f"\n{stopped_by(value)}{where}\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass
    os._exit(exit_status(value))  # not the usual exit: a module half imported has nothing to clean up


def walk(tb):
    while tb is not None:
        yield tb
        tb = tb.tb_next


def frame_is_module(tb) -> bool:
    return tb.tb_frame.f_code.co_name == "<module>"  # a module's own code runs while it is imported
