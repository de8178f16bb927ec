"""User-facing errors: the CLI prints their message as one line and exits non-zero."""


class UserError(Exception):
    """A mistake in what the user gave us (a path, a value, a file's contents).

    The message must name the problem precisely (file, line, value): the CLI prints it
    alone, without a traceback.
    """


class Interrupted(Exception):
    """Ctrl-C, after which the command itself says what it left: the entry point prints the
    message (if any) and exits 130, instead of its generic "no partial output was left"."""
