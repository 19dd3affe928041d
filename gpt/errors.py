"""The one exception type that means "the user can fix this"."""


class UserError(ValueError):
    """A mistake the user can fix: the scripts print its message, without a traceback, and exit 2."""
