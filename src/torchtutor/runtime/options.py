"""The one validation layer for numeric options: each check names the flag in a one-line
UserError, and refuses NaN and infinity wherever a finite number is meant (a comparison such as
`value <= 0` lets NaN through, which is how `--time-budget nan` once trained forever)."""

import math

from torchtutor.runtime.errors import UserError

# torch.manual_seed takes 64-bit seeds; NumPy's and Python's are reduced from it.
MAX_SEED = 2**63 - 1


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is None and low == 0:
        return "above 0" if low_open else "of 0 or more"
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    return f"in {left}{'-inf' if low is None else f'{low:g}'}, " \
           f"{'inf' if high is None else f'{high:g}'}{right}"


def check_range(flag: str, value: float, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> float:
    """`value` if it is a finite number within the bounds; else a UserError naming `flag`."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        bounds = _interval(low, high, low_open, high_open)
        raise UserError(f"{flag} must be a finite number {bounds}, not {value!r}")
    return value


def check_positive(flag: str, value: float) -> float:
    """A finite number above 0 (learning rates, time budgets, epochs, clip norms)."""
    return check_range(flag, value, 0, None, low_open=True)


def check_count(flag: str, value: int, low: int = 1, high: int | None = None) -> int:
    """A whole number within [low, high]."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low \
            or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"in {low}..{high}"
        raise UserError(f"{flag} must be a whole number {bounds}, not {value!r}")
    return value


def check_seed(flag: str, value: int) -> int:
    return check_count(flag, value, 0, MAX_SEED)


# What `chat export` and `vision export` write (runtime/export.py); here so that the command
# line can offer them without importing torch.
EXPORT_FORMATS = ("aoti", "onnx", "torchscript")


def check_choice(flag: str, value: str, choices: tuple[str, ...]) -> str:
    """`value` if it is one of `choices`; else a UserError naming `flag`."""
    if value not in choices:
        raise UserError(f"{flag} must be one of {', '.join(choices)}, not {value!r}")
    return value
