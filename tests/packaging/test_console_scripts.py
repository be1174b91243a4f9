"""Every console script in pyproject.toml points at a real callable, answers --help and
documents every flag."""
import argparse
import importlib
import re
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


def _parsers():
    from cifar10_client import batch, cli
    from cifar10_serving.settings import Settings
    from cifar10_training import cli as train_cli

    return {"cifar10-train": train_cli.build_parser(), "cifar10-serve": Settings.parser(),
            "cifar10-client": cli.build_parser(), "cifar10-batch": batch.build_parser()}


def _undocumented(parser: argparse.ArgumentParser, prog: str) -> list[str]:
    """Flags and arguments of ``parser`` and all its subcommands whose help says nothing but
    a default (``[default 3]``, ``(default: 3)``, ``[env X; default 3]``) or is missing."""
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                if not (choice.help or "").strip():
                    missing.append(f"{prog} {choice.dest}")
            for name, sub in action.choices.items():
                missing += _undocumented(sub, f"{prog} {name}")
            continue
        text = re.sub(r"\s*[\[(](env |default)[^\])]*[\])]\s*$", "", action.help or "")
        if not text.strip():
            missing.append(f"{prog} {'/'.join(action.option_strings) or action.dest}")
    return missing


@pytest.mark.parametrize("name", ["cifar10-train", "cifar10-serve", "cifar10-client", "cifar10-batch"])
def test_every_flag_has_a_help_text(name):
    assert _undocumented(_parsers()[name], name) == []
