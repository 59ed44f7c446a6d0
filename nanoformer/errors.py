"""One exception type for mistakes a user can fix.

The CLI turns `UserError` into a one-line message and exit code 2, with no traceback; everything
else is a bug and keeps its traceback. It subclasses `ValueError` so library callers can catch it
the ordinary way.
"""


class UserError(ValueError):
    """Bad input from the user: the message names what was given, where, and the fix."""
