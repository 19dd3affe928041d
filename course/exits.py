"""How a script ends when it can't go on: a mistake the user can fix, a file that can't be written,
Ctrl-C or SIGTERM, a closed pipe. With a message that says what is safe and what to type next,
instead of a traceback."""

import os
import shlex
import sys
from contextlib import contextmanager
from pathlib import Path

from gpt.errors import UserError

from .checkpoint import saved_iteration
from .distributed import is_main_process, launched_by_torchrun
from .files import WriteFailed
from .interrupts import CTRL_C, exit_status, interrupted, interrupts_raise, stopped_by


@contextmanager
def friendly_errors(checkpoint: str = ""):
    """A mistake the user can fix, a file that can't be written, Ctrl-C or SIGTERM end the script with
    a message instead of a traceback (exit 2, 130 or 143); given the run's checkpoint, the message
    says what it holds. Standard output closed under the script (`| head`) ends it quietly (exit 0)."""
    def safe() -> str:  # read when the script stops: the checkpoint changes as the run goes
        return what_is_saved(checkpoint) if checkpoint else ""

    pressed = len(CTRL_C)  # Ctrl-C pressed before this block is not this block's
    with interrupts_raise():
        try:
            yield
        except WriteFailed as e:  # a full disk, say: what was saved before is as it was
            print(f"error: {e}." + (f"\n{capitalized(safe())}" if checkpoint else "") +
                  "\nFree some space first, or write elsewhere (" + ("--checkpoint PATH or " if checkpoint else "") +
                  "--runs DIR, or --runs '' for none).", file=sys.stderr)
            raise SystemExit(2) from None
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (Terminated)
            if is_main_process():  # under torchrun every process gets it: process 0 speaks for all
                print(f"\n{stopped_by(e)}" + (f": {safe()}" if checkpoint else ""), file=sys.stderr)
            raise SystemExit(exit_status(e)) from None
        except BrokenPipeError:
            print(reader_gone() + (f": {safe()}" if checkpoint else ""), file=sys.stderr)
            raise SystemExit(0) from None
        except Exception:
            if not interrupted(since=pressed):
                raise
            print("\ninterrupted" + (f": {safe()}" if checkpoint else ""), file=sys.stderr)  # the error is its doing
            raise SystemExit(130) from None


def capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]  # not ending in a full stop: it may end in a command to copy


def reader_gone() -> str:
    """After a write to a closed pipe: if it is standard output that is closed, point it at nowhere,
    so that nothing fails again when Python flushes it on the way out; and say what happened."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # closed, or None: nothing to flush
        pass
    return "stopped: the program reading the output (a pipe, such as | head) closed it"


def what_is_saved(checkpoint: str) -> str:
    """For a run that stops early: what its checkpoint holds, and the command that goes on from it."""
    if not checkpoint:
        return "this run keeps no checkpoint, so its model was not saved"
    iteration = saved_iteration(checkpoint)
    if iteration is None:
        return f"no model was saved in {checkpoint}"
    return f"the model as of iteration {iteration} is in {checkpoint}; continue with --resume: {resume_command()}"


def resume_command() -> str:
    """The command that started this script, with --resume instead of --overwrite."""
    script = Path(sys.argv[0]).name
    if not (script.startswith("task") and script.endswith(".py")):
        return "the same command with --resume"
    args = [a for a in sys.argv[1:] if a not in ("--resume", "--overwrite")]
    launcher = ["python"]
    if launched_by_torchrun():  # the same number of processes again (on one machine; several: as started)
        launcher = ["torchrun", "--standalone", f"--nproc_per_node={os.environ.get('LOCAL_WORLD_SIZE', '1')}"]
    return shlex.join([*launcher, script, *args, "--resume"])


