"""User-facing errors: one line that names the file and says what to do."""


class FeatkitError(Exception):
    """An error caused by the user's input or environment, printed as one line without a traceback."""


class DamagedFileError(FeatkitError):
    """A file featkit wrote (or expects) is truncated, garbage or not what it should be. `path` names it, so a
    caller that can rebuild the file (a cache chunk, a state file) may catch this and start that part again."""

    def __init__(self, path, message: str):
        super().__init__(message)
        self.path = path
