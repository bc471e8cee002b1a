"""JSON for people and scripts alike: floats rounded to what they mean.

A float32 accuracy turned into a Python float prints as 0.47099998593330383; rounded to six
decimals it prints as 0.471, which is what was measured.
"""

import json
import math
from typing import Any

DIGITS = 6


def rounded(value: Any, digits: int = DIGITS) -> Any:
    """`value` with every finite float (in dicts, lists and tuples too) rounded to `digits`."""
    if isinstance(value, float):
        return round(value, digits) if math.isfinite(value) else value
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


def dumps(value: Any, digits: int = DIGITS) -> str:
    """One line of JSON with rounded floats; NaN and infinity are refused (not JSON)."""
    return json.dumps(rounded(value, digits), allow_nan=False)
