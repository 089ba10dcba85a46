"""`roost --help` and `roost train --help` start without importing torch: the CLI imports its verbs (and builds the
train options from roost.train.config) at start-up, so a torch import at the top of any of them would cost every
command seconds. Each case runs in a fresh interpreter and reports what it imported; a control case with torch
imported first shows the check sees it."""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = """
import contextlib, io, json, runpy, sys
{pre}
out = io.StringIO()
codes = []
for args in (["--help"], ["train", "--help"]):
    sys.argv = ["roost", *args]
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_module("roost", run_name="__main__")  # `python -m roost`: the command as a user runs it
        except SystemExit as e:
            codes.append(e.code or 0)
print(json.dumps({{"torch": "torch" in sys.modules, "codes": codes, "help": out.getvalue()}}))
"""


def _start(pre: str = "") -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD.format(pre=pre)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_help_imports_no_torch() -> None:
    got = _start()
    assert got["codes"] == [0, 0]
    help_text = str(got["help"])
    assert "Usage: roost" in help_text and "--seq-len" in help_text and "--dry-run" in help_text
    assert got["torch"] is False, "roost --help / roost train --help imported torch"


def test_the_check_sees_torch() -> None:
    assert _start("import torch")["torch"] is True
