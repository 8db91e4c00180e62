"""The one exception type for mistakes a user can fix.

The CLI prints ``error: <message>`` for it and exits with status 2, never a
traceback. Messages name the problem and the fix in one line.
"""


class LmforgeError(Exception):
    """A problem with the user's input or environment, with a one-line fix."""


def check_at_least(minimum: float, **options: float | None) -> None:
    """``check_at_least(1, batch_size=b)``: a one-line error naming ``--batch-size`` when it is below ``minimum``."""
    for name, value in options.items():
        if value is not None and value < minimum:
            raise LmforgeError(f"--{name.replace('_', '-')} must be at least {minimum} (got {value})")


def check_fraction(name: str, value: float | None, upper_closed: bool = False) -> None:
    """A share in [0, 1) (or [0, 1] with ``upper_closed``), named as its option in the error."""
    if value is not None and not (0 <= value < 1 or (upper_closed and value == 1)):
        raise LmforgeError(f"{name} must be in [0, 1{']' if upper_closed else ')'} (got {value})")
