"""A stand-in for models/cifar10-cnn.onnx: the seed CNN architecture with random weights.

Same layers and parameter count (276,138) as the trained model, exported the same way
(cifar10_training.export: uint8 input, scaling and softmax in the graph), so its speed is the
trained model's speed; its answers are meaningless. Used by the benchmark only while the
trained model is not there. Needs TensorFlow (the train extra).

    python -m bench.standin_model [OUTPUT]   (default .cache/bench/seed-cnn-standin.onnx)
"""

from __future__ import annotations

import sys
from pathlib import Path

DEFAULT_PATH = Path(".cache/bench/seed-cnn-standin.onnx")


def build(output: Path = DEFAULT_PATH) -> Path:
    import numpy as np

    from cifar10_training.export import build_metadata, export
    from cifar10_training.model import SEED_CNN_PARAMETERS, build_seed_cnn

    model = build_seed_cnn()
    assert model.count_params() == SEED_CNN_PARAMETERS, model.count_params()
    images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    config = {"model_name": "cifar10-cnn", "model_version": "0", "note": "untrained stand-in"}
    metadata = build_metadata(config, "0", "none (untrained stand-in)", "none", {"val_accuracy": None})
    export(model, output, metadata, images)
    return output


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_PATH))
