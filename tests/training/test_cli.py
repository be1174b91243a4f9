"""``cifar10-train``'s usage errors: one ``error:`` line and exit 2, never a traceback (the
console script itself; all found before TensorFlow is imported)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = str(Path(sys.executable).parent / "cifar10-train")


@pytest.mark.parametrize("argv, env, message", [
    (["--log-level", "bogus", "export", "--run-dir", "r"], {}, "argument --log-level: invalid choice: 'BOGUS'"),
    (["export", "--run-dir", "r"], {"CIFAR10_LOG_LEVEL": "bogus"}, "CIFAR10_LOG_LEVEL: invalid log level 'bogus'"),
    (["train", "--run-dir", "r", "--epochs", "-1"], {}, "epochs must be at least 1, got -1"),
    (["compare", "--out", "o", "--conv-dropout", "1.5"], {}, r"conv_dropout must be in \[0, 1\), got 1.5"),
    (["train", "--run-dir", "r", "--fill-mode", "mirror"], {}, "fill_mode must be one of nearest"),
    (["train", "--run-dir", "r", "--recipe", "fast"], {}, "argument --recipe: invalid choice: 'fast'"),
    (["train", "--run-dir", "r", "--test-size", "-1"], {}, "test_size must not be negative, got -1"),
    (["train", "--run-dir", "r", "--batch-size", "many"], {}, "argument --batch-size: invalid int value"),
    (["train", "--run-dir", "r", "--arch", "airbench94", "--recipe", "lab"], {},
     "recipe lab is for arch seed-cnn, not airbench94"),
    (["train", "--run-dir", "r", "--tta", "flip"], {}, r"--tta flip needs a network with a logits layer"),
    (["quantize", "--model", "m", "--data", "d", "--output", "o", "--calibration-images", "0"], {},
     "argument --calibration-images: must be at least 1, got 0"),
])
def test_bad_values_give_one_error_line_and_exit_2(tmp_path, argv, env, message):
    done = subprocess.run([SCRIPT, *argv], cwd=tmp_path, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert done.returncode == 2, done.stderr
    assert len(errors) == 1 and errors[0].startswith("cifar10-train"), done.stderr
    assert re.search(message, errors[0]), errors[0]
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing created
