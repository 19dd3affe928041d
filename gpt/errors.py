"""The exceptions that end a script with a message instead of a traceback."""


class UserError(ValueError):
    """A mistake the user can fix: the scripts print its message, without a traceback, and exit 2."""


class WriteFailed(UserError):
    """A file could not be written (a full disk, a size limit, a read-only place); the file that was
    there is as it was. The scripts say what else is safe (the last checkpoint) and exit 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (what `timeout`, a cluster's scheduler or a logout sends), raised like Ctrl-C's
    KeyboardInterrupt so that a run stops the same way: clean-ups run, and the message says where the
    last checkpoint is. The scripts exit 143, as a process that SIGTERM ended does."""
