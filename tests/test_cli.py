import subprocess
import sys
from pathlib import Path

from torchtutor.cli import main


def test_help_lists_command_groups():
    result = subprocess.run([sys.executable, "-m", "torchtutor", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for group in ("lesson", "vision", "chat"):
        assert group in result.stdout


def test_console_script_runs():
    script = Path(sys.executable).parent / "torchtutor"
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("torchtutor ")


def test_bad_subcommand_is_a_usage_error(capsys):
    try:
        main(["nonsense"])
    except SystemExit as exc:
        assert exc.code == 2
    else:
        raise AssertionError("argparse accepted an unknown command")
