"""The generated protobuf/gRPC code in protos/cifar10_protos/ is what protos/generate.py makes now.

Regenerate with ``make protos`` (``python protos/generate.py``) after changing protos/;
never edit protos/cifar10_protos/ by hand.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "protos" / "cifar10_protos"


def files_under(base: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(base)): p.read_bytes()
        for p in sorted(base.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def test_generated_code_is_not_stale(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "protos" / "generate.py"), "--out", str(tmp_path / "proto")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    fresh, committed = files_under(tmp_path / "proto"), files_under(PACKAGE)
    assert fresh, "protos/generate.py generated nothing"
    assert sorted(fresh) == sorted(committed), "files differ: run `make protos` and commit protos/cifar10_protos/"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated files {stale}: run `make protos` and commit protos/cifar10_protos/"
