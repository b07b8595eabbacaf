"""User-facing errors: one line that names the file and says what to do."""


class FeatkitError(Exception):
    """An error caused by the user's input or environment, printed as one line without a traceback."""
