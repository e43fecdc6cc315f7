"""The one way tests run the programs in examples/: as a user would, or loaded in-process.

Both run an example on its embedded defaults (memory, SQLite, the in-memory broker): the
variables through which examples find real servers are left out of the environment.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
# what the examples read to find a server (without them, they use the embedded default)
SERVER_VARIABLES = ("CACHE_URL", "SCALEPATTERNS_AMQP_URL")


def run_example(script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python examples/<script> *args`` from the checkout, as the docs say to.

    Returns the finished process (text output); the caller checks its exit code and output.
    """
    env = {k: v for k, v in os.environ.items() if k not in SERVER_VARIABLES}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
        check=False,
    )


def load_example(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import ``examples/<name>.py`` as module `name`, to call its functions.

    The module is registered in `sys.modules` for the test's duration (dataclasses and
    pickling look it up there), and the server variables are unset while it runs.
    """
    for variable in SERVER_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module
