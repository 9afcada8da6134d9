"""User-facing errors: reported as one line, without a traceback."""


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
