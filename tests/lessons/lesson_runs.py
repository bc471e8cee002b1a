"""Each lesson's command run once per test session, shared by the claim and notebook tests."""

import subprocess
import sys

_OUTPUTS: dict[tuple[str, ...], str] = {}


def lesson_stdout(name: str, *extra: str) -> str:
    """stdout of `torchtutor lesson NAME --device cpu EXTRA...` (cached); fails on a bad exit."""
    key = (name, *extra)
    if key not in _OUTPUTS:
        result = subprocess.run([sys.executable, "-m", "torchtutor", "lesson", name,
                                 "--device", "cpu", *extra],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        _OUTPUTS[key] = result.stdout
    return _OUTPUTS[key]


def shown(stdout: str, label: str) -> str:
    """The value printed after `label:` (the first such line)."""
    prefix = f"   {label}:"
    for line in stdout.splitlines():
        if line.startswith(prefix):
            return line[len(prefix):].strip()
    raise AssertionError(f"the lesson printed no {label!r}")
