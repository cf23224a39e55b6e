"""The one exception type the commands raise themselves."""


class UserError(Exception):
    """An error caused by the command line, reported as one line without a traceback."""
