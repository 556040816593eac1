"""The client installed alone (``pip install ./client``) in a fresh virtual environment, with nothing else."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from test_client_fixtures import LiveEmulator

pytest_plugins = ["test_client_fixtures"]

CLIENT = Path(__file__).resolve().parent.parent / "client"
SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, sys
    import deferred_client
    from deferred_client import defer
    third_party = [m for m in ("google", "requests", "aiohttp", "jwt", "deferred_emulator", "pytest")
                   if importlib.util.find_spec(m) is not None]
    task = defer(divmod, 7, 2, _name="alone")
    print(json.dumps({"file": deferred_client.__file__, "third_party": third_party, "task": task.name,
                      "modules": sorted(m for m in sys.modules if m.split(".")[0] in ("google", "requests"))}))
    """
)


@pytest.mark.subprocess
def test_the_client_alone_imports_and_defers_with_the_standard_library(
    tmp_path: Path, live_emulator: Callable[..., LiveEmulator]
) -> None:
    # Given a wheel of ./client and a fresh venv without even pip (pip runs from outside, offline)
    run = {"check": True, "capture_output": True, "text": True, "timeout": 120}
    source = tmp_path / "client"  # a copy, so the build leaves nothing in the checkout
    shutil.copytree(CLIENT, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
        + ["-w", str(tmp_path / "wheels"), str(source)],
        **run,  # type: ignore[call-overload]
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], **run)  # type: ignore[call-overload]
    python = venv / "bin" / "python"
    [wheel] = (tmp_path / "wheels").glob("deferred_client-*.whl")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        **run,  # type: ignore[call-overload]
    )
    # When it defers into a running emulator
    emulator = live_emulator()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEFERRED_", "PYTHON"))}
    env["DEFERRED_EMULATOR_HOST"] = emulator.host
    out = subprocess.run([str(python), "-c", SCRIPT], env=env, cwd=tmp_path, **run)  # type: ignore[call-overload]
    result = json.loads(out.stdout)
    # Then it ran from the fresh venv, with no third-party package there to import, and the task is queued
    assert result["file"].startswith(str(venv)), result
    assert result["third_party"] == [] and result["modules"] == []
    assert result["task"] == "alone"
    status, task = emulator.task("default", "alone")
    assert status == 200, task
