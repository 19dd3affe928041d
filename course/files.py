"""Writing a file so that nothing the user had is lost: via a temporary file and one rename; and
checking, before a run starts, that the files it will write can be written."""

import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from gpt.errors import UserError

from .interrupts import interrupts_raise, signals_held

class WriteFailed(UserError):
    """A file could not be written (a full disk, a size limit, a read-only place); the file that was
    there is as it was. The scripts say what else is safe (the last checkpoint) and exit 2."""


# What a write that fails for lack of room or permission raises; any other error is a bug, and keeps its traceback.
CANNOT_WRITE = {errno.ENOSPC: "the disk is full", errno.EFBIG: "the file would pass a limit on file size",
                errno.EDQUOT: "the disk quota is used up", errno.EROFS: "the file system is read-only",
                errno.EIO: "the disk reported an error", errno.EACCES: "no permission", errno.EPERM: "no permission"}


@contextmanager
def atomic_write(path, mode: str = "wb", **open_kwargs):
    """Yield a temporary file next to path; when the block ends without an error, it replaces path in
    one rename. A crash, an exception, Ctrl-C or SIGTERM leaves path as it was and no temporary file
    behind. A write that fails for lack of room or permission raises WriteFailed, saying so."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory: give the name of a file to write")
    kept = "it is as it was" if path.exists() else "nothing was written there"
    with interrupts_raise():  # so that Ctrl-C and SIGTERM run the clean-up below
        tmp = None
        try:
            with signals_held():  # the temporary file is made and its name noted in one piece
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        except OSError as e:  # a file where a folder should be, no permission, a full disk...
            raise WriteFailed(f"could not write {path}: {path_problem(path) or e.strerror}; {kept}") from None
        try:
            with os.fdopen(fd, mode, **open_kwargs) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; give it an ordinary file's mode
            os.replace(tmp, path)
        except (OSError, RuntimeError) as e:  # torch.save wraps the OSError of a failed write in a RuntimeError
            why = write_error(e)
            if why is None:
                raise
            raise WriteFailed(f"could not write {path}: {why}; {kept}, and no partial file was left") from None
        finally:
            with signals_held():  # a second Ctrl-C must not stop the clean-up halfway
                if tmp is not None and os.path.exists(tmp):
                    os.remove(tmp)


def write_error(e: BaseException) -> str | None:
    """Why a write failed, if it was for lack of room or permission (the OSError, or the one a
    RuntimeError from torch.save was raised while handling), else None."""
    while e is not None:
        if isinstance(e, OSError) and e.errno in CANNOT_WRITE:
            return f"{CANNOT_WRITE[e.errno]} ({e.strerror})"
        e = e.__cause__ or e.__context__
    return None


def check_writable(path, flag: str, folder: bool = False) -> None:
    """Refuse, before anything runs, an output path that can't be written, with a message that names
    the part of the path that is wrong."""
    problem = path_problem(path, folder)
    if problem:
        raise UserError(f"{flag} {path}: {problem}; choose another path")


def path_problem(path, folder: bool = False) -> str | None:
    """What stops a file (or with folder=True, a folder) being written at path, or None: a file where
    a folder must be, a folder where a file must be, or a place without permission."""
    path = Path(path)
    if not folder and path.is_dir():
        return f"{path} is a folder, not a file (a name in it would do, e.g. {path / 'model.pt'})"
    if folder and path.exists() and not path.is_dir():
        return f"{path} is a file, not a folder"
    part = path if folder else path.parent
    while not part.exists() and part != part.parent:  # the nearest part of the path that exists
        part = part.parent
    if part.exists() and not part.is_dir():
        return f"{part} is a file, not a folder, so nothing can be saved under it"
    if part.is_dir() and not os.access(part, os.W_OK | os.X_OK):
        return f"no permission to write in {part}"
    return None
