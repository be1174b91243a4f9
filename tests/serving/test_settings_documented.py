"""README's configuration table lists every server setting, with its flag and its default."""
import re
from dataclasses import MISSING, fields
from pathlib import Path

from cifar10_serving.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _row(env: str) -> str:
    rows = [line for line in README.splitlines() if line.startswith("|") and f"`{env}`" in line]
    assert rows, f"README's configuration table has no row for {env}"
    return rows[0]


def test_every_setting_is_in_the_readme_table_with_its_flag_and_default():
    for f in fields(Settings):
        row = _row(f"CIFAR10_{f.name.upper()}")
        assert f"`--{f.name.replace('_', '-')}`" in row, row
        default = f.default if f.default is not MISSING else None
        cells = [c.strip() for c in row.strip("|").split("|")]
        if default == 0 and f.name in ("threads", "instances", "decode_threads"):  # from the CPUs
            assert "CPU" in cells[2], row
            assert str(getattr(Settings(), f.name)) in cells[2] or f.name != "instances", row
        elif default is None or default == "":
            assert cells[2] == "none", row
        elif isinstance(default, bool):
            assert cells[2] == str(default).lower(), row
        elif isinstance(default, float):
            assert re.match(rf"`?{default:g}\b", cells[2]), row
        else:
            assert cells[2].strip("`").split()[0] == str(default), row
