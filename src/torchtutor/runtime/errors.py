"""The one exception type that reaches the user as a single line instead of a traceback."""


class UserError(Exception):
    """A problem the user can fix (bad input, missing file, unavailable device).

    The command line prints `error: <message>` and exits with status 2.
    """
