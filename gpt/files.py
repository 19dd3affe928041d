"""Writing a file so that nothing the user had is lost: via a temporary file and one rename."""

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError


@contextmanager
def atomic_write(path, mode: str = "wb", **open_kwargs):
    """Yield a temporary file next to path; when the block ends without an error, it replaces path in
    one rename. A crash, an exception or Ctrl-C leaves path as it was and no temporary file behind."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory: give the name of a file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    except OSError as e:
        raise UserError(f"cannot write {path}: {e}") from None
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; give it an ordinary file's mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
