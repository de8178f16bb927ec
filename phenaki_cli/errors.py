"""User-facing errors: the CLI prints their message as one line and exits non-zero."""


class UserError(Exception):
    """A mistake in what the user gave us (a path, a value, a file's contents).

    The message must name the problem precisely (file, line, value): the CLI prints it
    alone, without a traceback.
    """
