"""Every console script in pyproject.toml points at a real callable, and each answers --help."""
import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_the_documented_commands_are_all_declared():
    assert {"cifar10-train", "cifar10-serve", "cifar10-client", "cifar10-batch"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_script_target_is_callable_and_answers_help(name):
    module, _, attr = SCRIPTS[name].partition(":")
    assert callable(getattr(importlib.import_module(module), attr))
    done = subprocess.run([sys.executable, "-c", f"import sys; from {module} import {attr}; sys.exit({attr}(['--help']))"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
