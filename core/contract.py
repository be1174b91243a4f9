"""The model contract: what every ONNX file handed from training to serving carries.

Training writes it (``cifar10_training.export``), serving checks it (``cifar10_serving.model``).
Kept free of heavy imports so both sides, and the clients, can share it.
"""

from __future__ import annotations

INPUT_NAME = "images"
"""uint8 [N, 32, 32, 3], RGB, NHWC; scaling to [0, 1] happens inside the graph."""

OUTPUT_NAME = "probabilities"
"""float32 [N, 10], rows sum to 1, in the order of CLASS_NAMES."""

IMAGE_SIZE = 32
CHANNELS = 3
INPUT_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, CHANNELS)

CLASS_NAMES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
NUM_CLASSES = len(CLASS_NAMES)

# Keys of the ONNX model's metadata_props. Values are strings; *_json values are JSON.
META_CLASS_NAMES = "class_names_json"
META_MODEL_NAME = "model_name"
META_MODEL_VERSION = "model_version"
META_TRAINING_CONFIG = "training_config_json"
META_DATASET = "dataset"
META_DATASET_FINGERPRINT = "dataset_fingerprint"
META_VALIDATION_METRICS = "validation_metrics_json"
META_CREATED = "created_utc"

REQUIRED_METADATA = (
    META_CLASS_NAMES,
    META_MODEL_NAME,
    META_MODEL_VERSION,
    META_TRAINING_CONFIG,
    META_DATASET,
    META_DATASET_FINGERPRINT,
    META_VALIDATION_METRICS,
)
