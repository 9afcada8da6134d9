"""User-facing errors: reported as one line, without a traceback; and the debug switch that
shows the traceback of a failing user case (``--debug`` or ``PARALLEL_MS_DEBUG=1``)."""
import os

#: the environment variable that turns debug output on; ``--debug`` sets it
DEBUG_ENV = "PARALLEL_MS_DEBUG"
#: how to turn debug output on, for the one-line errors that have more to show
DEBUG_HINT = f"rerun with --debug or {DEBUG_ENV}=1"


def debug() -> bool:
    """Whether debug output is on (``--debug`` or ``PARALLEL_MS_DEBUG`` set, and not 0)."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def enable_debug() -> None:
    """Turn debug output on for this process (what ``--debug`` does)."""
    os.environ[DEBUG_ENV] = "1"


def describe(err: BaseException) -> str:
    """``Type: first line of the message`` (``Type`` alone without one): an exception in a
    one-line report."""
    first = next(iter(str(err).strip().splitlines()), "")
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


class UserError(Exception):
    """A mistake in the user's input (configuration, command line, files).

    ``collective=True`` means every rank detects the same error at the same point (for example
    validation of a configuration all ranks read); then rank 0 alone prints it and all ranks
    exit with status 2. Otherwise the rank that raised it prints it and aborts the job, so the
    other ranks cannot hang waiting for it.
    """

    def __init__(self, message: str, *, collective: bool = False) -> None:
        super().__init__(message)
        self.collective = collective


class Diverged(UserError):
    """The training diverged (a non-finite loss term, parameter or gradient norm); the same on
    every rank."""

    def __init__(self, message: str) -> None:
        super().__init__(message, collective=True)
