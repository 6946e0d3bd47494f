"""The one exception type for user mistakes: the CLI prints it as a single line, no traceback."""


class BenchforgeError(Exception):
    """A problem the user can fix (bad input, missing stage, unreachable endpoint)."""
