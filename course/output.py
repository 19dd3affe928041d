"""Task 08's stream on standard output: each token's text as it comes, until the stream ends (after
--max-new-tokens), Ctrl-C (the way to stop an endless stream: not an error), SIGTERM (which says so,
exit 143), a reader that goes away (| head: quietly) or a full disk (a message; what was written
before is there)."""

import itertools
import os
import sys

from gpt.errors import UserError

from .files import write_error
from .interrupts import Terminated


def write_stream(prompt: str, tokens, text_of, max_tokens: int | None = None, out=None) -> None:
    """Write prompt, then text_of(token) for each token (at most max_tokens), flushed one by one."""
    out = out or sys.stdout
    if out is None:  # started with standard output closed (>&-): no one to stream to
        print("standard output is closed, so there is nowhere to stream to; nothing was done. Run it with the "
              "output on the screen, or into a file: python task08_infinite.py --max-new-tokens 2000 > sonnet.txt",
              file=sys.stderr)
        return
    if max_tokens is not None:
        tokens = itertools.islice(tokens, max_tokens)
    try:
        out.write(prompt)
        for token in tokens:
            out.write(text_of(token))
            out.flush()
        out.write("\n")
        out.flush()
    except KeyboardInterrupt as e:  # Ctrl-C: the way to stop an endless stream, not an error
        out.write("\n")
        out.flush()
        if isinstance(e, Terminated):  # SIGTERM: stopped from outside, and says so (exit 143)
            raise
    except BrokenPipeError:  # the reader went away (| head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
    except OSError as e:  # > a file on a full disk
        if write_error(e) is None:
            raise
        if out is sys.stdout:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the rest can't be written either
        raise UserError(f"could not write the stream to standard output: {write_error(e)}; what was "
                        f"written before is there") from None
