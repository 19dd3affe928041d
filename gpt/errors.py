"""The exception the lesson raises for a mistake the user can fix: a block_size exceeded, an n_embd
that n_head does not divide, a character the vocabulary doesn't have. The scripts print its message
without a traceback and exit 2."""


class UserError(ValueError):
    """A mistake the user can fix; the message says what to do."""
