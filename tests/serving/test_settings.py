"""Settings: flag over environment over default, derived defaults, one error per bad value."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cifar10_core.cpus import available_cpus
from cifar10_serving.settings import Settings


def test_flag_wins_over_environment_which_wins_over_default():
    env = {"CIFAR10_MAX_BATCH_SIZE": "16", "CIFAR10_INSTANCES": "2"}
    assert Settings.from_args([], env).max_batch_size == 16
    assert Settings.from_args(["--max-batch-size", "8"], env).max_batch_size == 8
    assert Settings.from_args([], {}).max_batch_size == 32
    assert Settings.from_args([], env).instances == 2


def test_threads_default_to_the_cpus_and_overlapping_runs_share_them():
    cpus = available_cpus()
    assert Settings().threads == cpus
    assert Settings().instances == min(2, cpus)  # 0 (the default) picks 2, 1 on a single CPU
    assert Settings(instances=1).overlap_threads == cpus
    assert Settings(instances=2).threads == cpus  # a run alone still gets every CPU
    assert Settings(instances=2).overlap_threads == max(1, cpus // 2)
    assert Settings(instances=4 * cpus).overlap_threads == 1
    assert Settings(instances=2, threads=3).threads == 3  # explicit threads are kept
    assert Settings(instances=2, threads=3).overlap_threads == 1
    assert Settings(instances=1, workers=2).threads == cpus  # a lone request: every CPU
    assert Settings(instances=1, workers=2).overlap_threads == max(1, cpus // 2)


def test_connections_have_a_maximum_age_with_a_grace_period_unless_off():
    from cifar10_serving.grpc_api.server import grpc_options

    options = dict(grpc_options(Settings()))
    assert options["grpc.max_connection_age_ms"] == 300_000
    assert options["grpc.max_connection_age_grace_ms"] == 30_000
    env = {"CIFAR10_MAX_CONNECTION_AGE_S": "2.5"}
    options = dict(grpc_options(Settings.from_args(["--max-connection-age-grace-s", "1"], env)))
    assert options["grpc.max_connection_age_ms"] == 2500
    assert options["grpc.max_connection_age_grace_ms"] == 1000
    options = dict(grpc_options(Settings.from_args(["--max-connection-age-s", "0"], {})))
    assert "grpc.max_connection_age_ms" not in options  # gRPC's default: no age
    assert "grpc.max_connection_age_grace_ms" not in options


@pytest.mark.parametrize("argv, message", [
    (["--instances", "-1"], "instances must not be negative"),
    (["--max-connection-age-s", "-1"], "max_connection_age_s must not be negative"),
    (["--instances", "two"], "invalid value for --instances"),
    (["--max-queue-size", "8", "--max-batch-size", "16"], "max_queue_size must be at least max_batch_size"),
])
def test_bad_values_are_named(argv, message):
    with pytest.raises(ValueError, match=message):
        Settings.from_args(argv, {})


def test_spinning_is_an_on_off_flag_over_the_environment():
    assert Settings.from_args([], {}).spinning is False
    assert Settings.from_args(["--spinning"], {}).spinning is True
    assert Settings.from_args(["--no-spinning"], {"CIFAR10_SPINNING": "1"}).spinning is False
    for value, expected in (("true", True), ("1", True), ("false", False), ("0", False)):
        assert Settings.from_args([], {"CIFAR10_SPINNING": value}).spinning is expected
    with pytest.raises(SystemExit) as info:  # no value after the flag
        Settings.from_args(["--spinning", "true"], {})
    assert info.value.code == 2


@pytest.mark.parametrize("argv, env, message", [
    (["--log-level", "bogus"], {}, "unknown log_level 'bogus'"),
    ([], {"CIFAR10_LOG_LEVEL": "bogus"}, "unknown log_level 'bogus'"),
    ([], {"CIFAR10_SPINNING": "maybe"}, "invalid value for CIFAR10_SPINNING"),
    (["--port", "http"], {}, "invalid value for --port"),
])
def test_bad_values_exit_2_with_one_error_line(argv, env, message):
    """The console script itself: one ``cifar10-serve: error:`` line, exit 2, no traceback."""
    done = subprocess.run([str(Path(sys.executable).parent / "cifar10-serve"), *argv],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [done.stderr.strip()], done.stderr
    assert done.stderr.startswith("cifar10-serve: error: ") and message in done.stderr
