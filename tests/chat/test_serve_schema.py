"""`chat serve` keeps its published contract: schemathesis over every operation in /openapi.json.

The real command on a tiny trained run; schemathesis's `st run` with all its checks (and the
two in serve_schema_hooks.py), deterministic generation and few examples per operation, so that
it takes seconds. bench/RESULTS.md records the same run with 1,000 examples per operation.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

import torchtutor
from tests.chat.serve_support import free_port, serve_command, start_server, stop_server, tiny_run

HOOKS = Path(__file__).with_name("serve_schema_hooks.py")
EXAMPLES = 30


def schemathesis_command(url: str, examples: int) -> list[str]:
    """`st run` against a server at `url`: every check, but positive_data_acceptance is
    replaced by the hooks' version (serve_schema_hooks.py says why)."""
    return [sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json",
            "--checks", "all", "--exclude-checks", "positive_data_acceptance",
            "--max-examples", str(examples),
            # Deterministic: the same cases every run (no seed, no example database).
            "--generation-deterministic",
            "--workers", "1", "--request-timeout", "10", "--no-color"]


def test_the_server_answers_as_its_openapi_description_says(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_server(serve_command(tiny_run(), port, "--no-access-log"), port)
    try:
        operations = sum(len(methods) for methods in
                         httpx.get(url + "/openapi.json").json()["paths"].values())
        # The hooks import torchtutor: the same copy this test runs.
        src = str(Path(torchtutor.__file__).parents[1])
        env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS),
               "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
        # In tmp_path: schemathesis keeps a cache of crashes in the working directory.
        run = subprocess.run(schemathesis_command(url, EXAMPLES), cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    finally:
        assert stop_server(process) == 0
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-6000:]
    assert f"Tested: {operations}" in report, report[-3000:]
    assert re.search(r"\d+ generated, \d+ passed", report), report[-3000:]
