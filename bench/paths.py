"""Where the benchmarks find the repository and the models they serve."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REAL_MODEL = ROOT / "models" / "cifar10-cnn.onnx"
STANDIN_MODEL = ROOT / ".cache" / "bench" / "seed-cnn-standin.onnx"
