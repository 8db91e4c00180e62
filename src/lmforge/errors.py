"""The one exception type for mistakes a user can fix.

The CLI prints ``error: <message>`` for it and exits with status 2, never a
traceback. Messages name the problem and the fix in one line.
"""


class LmforgeError(Exception):
    """A problem with the user's input or environment, with a one-line fix."""
