"""The TensorFlow settings cifar10-train starts with: defaults that give way to the user's."""

import os
import subprocess
import sys

from cifar10_training import tensorflow_env


def test_defaults_fill_only_what_the_environment_leaves_unset(monkeypatch):
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    tensorflow_env.apply_defaults()
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1"
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"  # the user's value stays


def test_the_training_command_runs_tensorflow_with_onednn_on_unless_told_otherwise(tmp_path):
    # A fresh process, as a user runs cifar10-train: the command fails on a missing run folder
    # after setting the defaults and before importing TensorFlow, which the probe then imports.
    probe = ("from cifar10_training import cli; "
             f"assert cli.main(['export', '--run-dir', {str(tmp_path / 'none')!r}, '--output', 'x.onnx']) == 2; "
             "from tensorflow.python.util import _pywrap_util_port as port; print(port.IsMklEnabled())")
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    on = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    off = subprocess.run([sys.executable, "-c", probe], env={**env, "TF_ENABLE_ONEDNN_OPTS": "0"},
                         capture_output=True, text=True, check=True)
    assert (on.stdout.split()[-1], off.stdout.split()[-1]) == ("True", "False")
