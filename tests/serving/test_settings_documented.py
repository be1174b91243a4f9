"""docs/configuration.md is what the settings generate now: it cannot disagree with --help."""

from dataclasses import fields
from pathlib import Path

from cifar10_serving.settings import Settings, default_text, reference

ROOT = Path(__file__).resolve().parents[2]


def test_the_configuration_reference_is_current():
    assert (ROOT / "docs" / "configuration.md").read_text() == reference(), (
        "stale: run `make docs` (python -m cifar10_serving.settings > docs/configuration.md)")


def test_help_shows_every_setting_with_the_reference_default():
    text = " ".join(Settings.parser().format_help().split())
    for f in fields(Settings):
        assert f"--{f.name.replace('_', '-')}" in text
        assert f"default {' '.join(default_text(f).split())}" in text, f.name


def test_computed_defaults_are_described_not_shown_as_zero():
    for name in ("threads", "instances", "decode_threads"):
        field = next(f for f in fields(Settings) if f.name == name)
        assert field.default == 0 and default_text(field) != "0"
