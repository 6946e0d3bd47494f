"""The one exception type for user mistakes: the CLI prints it as a single line, no traceback."""


class BenchforgeError(Exception):
    """A problem the user can fix (bad input, missing stage, unreachable endpoint)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, systemd, ``docker stop``, a batch system): handled like
    Ctrl-C — sandbox workers killed, a one-line message, exit 143, resumable."""


class RegressionDetected(BenchforgeError):
    """``aggregate.exit_on_regression``: the score dropped below the baseline's interval
    (the CLI exits 3)."""


class VerifyFailed(Exception):
    """``benchforge verify`` found problems (the CLI lists them and exits 1).

    Attributes:
        problems: one line per inconsistency found.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"{len(problems)} problem(s)")
        self.problems = problems
