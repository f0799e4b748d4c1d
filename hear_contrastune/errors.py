"""The one exception type for user mistakes.

Anything a user can get wrong (a path, an option, a file's contents) raises `UserError` with
one line that names the file or option and the problem; the CLI prints that line and exits 2
instead of a traceback. Bugs stay ordinary exceptions, so they keep their tracebacks.
"""


class UserError(Exception):
    """A mistake in the user's input, reported as one line."""
