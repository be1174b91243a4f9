"""TensorFlow's settings for the commands that train: environment variables TensorFlow reads
when it is first imported, so they are set before that, and only where the user has not."""

from __future__ import annotations

import os

DEFAULTS = {
    # C++ log lines of errors only: TensorFlow's INFO and WARNING lines are start-up noise.
    "TF_CPP_MIN_LOG_LEVEL": "2",
    # TensorFlow turns its oneDNN kernels on by itself only on CPUs with AVX-512 VNNI or newer;
    # on AVX2 CPUs they train these networks 1.3 to 1.6 times faster (docs/training.md, "oneDNN").
    "TF_ENABLE_ONEDNN_OPTS": "1",
}


def apply_defaults() -> None:
    """Set each of ``DEFAULTS`` that the environment does not set already."""
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
