"""The one exception type for user mistakes: the CLI prints it as a single line, no traceback."""


class BenchforgeError(Exception):
    """A problem the user can fix (bad input, missing stage, unreachable endpoint)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, systemd, ``docker stop``, a batch system): handled like
    Ctrl-C — sandbox workers killed, a one-line message, exit 143, resumable."""
