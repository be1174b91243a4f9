"""cifar10-client against the real server: commands, table/JSON output, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ports import free_port
from cifar10_client.cli import main
from tests.client.helpers import image_folder

ROOT = Path(__file__).resolve().parents[2]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_health_and_info(server, capsys):
    code, out, _ = run(capsys, "--address", server.address, "health")
    assert (code, out.strip()) == (0, "SERVING")
    code, out, _ = run(capsys, "--address", server.address, "health", "--json", "--service", "cifar10.v2.Classifier")
    assert code == 0 and json.loads(out) == {"service": "cifar10.v2.Classifier", "status": "SERVING"}
    code, out, _ = run(capsys, "--address", server.address, "info")
    assert code == 0 and "tiny-cnn" in out and "airplane, automobile" in out and "[-1, 32, 32, 3]" in out
    code, out, _ = run(capsys, "--address", server.address, "info", "--json")
    info = json.loads(out)
    assert code == 0 and info["name"] == "tiny-cnn" and info["version"] == "1" and len(info["labels"]) == 10


def test_classify_table_json_globs_and_top_k(server, tmp_path, capsys, monkeypatch):
    paths = image_folder(tmp_path / "imgs", per_class=2)
    monkeypatch.setenv("CIFAR10_ADDRESS", server.address)  # the env default for --address
    code, out, err = run(capsys, "classify", str(tmp_path / "imgs" / "**" / "*.png"), "--top-k", "3")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split() == ["FILE", "LABEL", "PROBABILITY", "TOP-2", "TOP-3"]
    assert len(lines) == 1 + len(paths)
    code, out, _ = run(capsys, "classify", *map(str, paths), "--json", "--top-k", "2", "--preprocess", "client",
                       "--batch-size", "4")
    records = json.loads(out)
    assert code == 0 and [r["file"] for r in records] == list(map(str, paths))
    for r in records:
        assert len(r["top"]) == 2 and len(r["probabilities"]) == 10 and r["label"] == r["top"][0]["label"]


def test_classify_failures_exit_1_and_keep_the_others(server, tmp_path, capsys):
    good = image_folder(tmp_path, per_class=1, classes=("cat",))[0]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    code, out, err = run(capsys, "--address", server.address, "classify", str(good), str(bad),
                         str(tmp_path / "missing.png"), str(tmp_path / "*.nothing"), "--json")
    records = json.loads(out)
    assert code == 1
    assert "error" not in records[0]
    assert [r["error"]["code"] for r in records[1:]] == ["INVALID_ARGUMENT"] * 3
    assert "Traceback" not in err
    # The server's verdict with its status; a local problem in its own words, naming the file.
    assert err.splitlines() == [
        f"cifar10-client: {bad}: INVALID_ARGUMENT: {records[1]['error']['message']}",
        f"cifar10-client: cannot read {tmp_path / 'missing.png'}: No such file or directory",
        f"cifar10-client: {tmp_path / '*.nothing'}: no file matches this pattern",
    ]


def test_usage_and_unavailable_exit_codes(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["classify"])  # no files
    assert info.value.code == 2
    code, _, err = run(capsys, "--address", f"localhost:{free_port()}", "classify", "x.png", "--top-k", "11")
    assert code == 2 and "--top-k" in err
    code, _, err = run(capsys, "--address", "localhost:1", "--ca-cert", str(tmp_path / "none.pem"), "health")
    assert code == 2
    # No server: one line at once, with retries or without (tests/client/test_reaching.py: the timing).
    for retries in ("1", "0"):
        code, _, err = run(capsys, "--address", f"localhost:{free_port()}", "--timeout", "30", "--retries",
                           retries, "info")
        assert code == 3 and "cannot reach" in err and "Traceback" not in err
    code, _, err = run(capsys, "--address", f"localhost:{free_port()}", "--retries", "5", "info")
    assert code == 2 and "--retries must be in 0..4" in err


def test_a_message_over_the_size_limit_exits_6_and_says_so(server_factory, tmp_path, capsys):
    srv = server_factory(max_message_bytes=300_000)
    big = tmp_path / "big.png"
    big.write_bytes(bytes(400_000))
    code, _, err = run(capsys, "--address", srv.address, "classify", str(big))
    assert code == 6, err
    assert "message too large: 4000" in err and "bytes, limit 300000" in err and "Traceback" not in err


def test_connection_flags_go_before_or_after_the_command(server, tmp_path, capsys):
    image = image_folder(tmp_path, per_class=1, classes=("cat",))[0]
    code, out, err = run(capsys, "classify", str(image), "--address", server.address, "--json")
    assert code == 0, err
    assert json.loads(out)[0]["file"] == str(image)
    code, out, err = run(capsys, "--address", server.address, "classify", str(image), "--json")
    assert code == 0, err
    assert json.loads(out)[0]["file"] == str(image)
    # One given after the command wins; one not given after it leaves the one before alone.
    nowhere = f"localhost:{free_port()}"
    code, out, err = run(capsys, "--address", nowhere, "--timeout", "2", "info", "--address", server.address)
    assert code == 0 and "tiny-cnn" in out, err
    code, _, err = run(capsys, "--address", server.address, "info", "--address", nowhere,
                       "--timeout", "1", "--retries", "0")
    assert code == 3 and f"cannot reach {nowhere}" in err


def test_console_script_takes_flags_after_the_command_and_rejects_bad_ones(server, tmp_path):
    """``cifar10-client classify x.png --address host:port``, as a user types it; a bad flag
    value is one ``error:`` line (after the usage) and exit 2, never a traceback."""
    image = image_folder(tmp_path, per_class=1, classes=("dog",))[0]
    script = str(Path(sys.executable).parent / "cifar10-client")
    done = subprocess.run([script, "classify", str(image), "--address", server.address],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1].startswith(str(image))
    done = subprocess.run([script, "info", "--timeout", "soon"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if "error:" in line] == [
        "cifar10-client info: error: argument --timeout: invalid float value: 'soon'"]


def test_stdin_and_missing_extra_in_a_subprocess(server, tmp_path):
    image = image_folder(tmp_path, per_class=1, classes=("dog",))[0]
    env = {**os.environ, "CIFAR10_ADDRESS": server.address, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "cifar10_client.cli", "classify", "-", "--json"],
                          input=image.read_bytes(), capture_output=True, env=env, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["file"] == "-"
    # The health check needs grpcio-health-checking (the client extra): a clear message, exit 5.
    code = ("import sys; sys.modules['grpc_health'] = None; "
            "from cifar10_client.cli import main; sys.exit(main(['health']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=60)
    assert done.returncode == 5
    assert "pip install 'cifar10-serving[client]'" in done.stderr and "Traceback" not in done.stderr


def test_other_server_errors_exit_4(capsys):
    """A gRPC server without the cifar10.v2 service answers UNIMPLEMENTED: exit 4."""
    from concurrent import futures

    import grpc

    bare = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = bare.add_insecure_port("127.0.0.1:0")
    bare.start()
    try:
        code, _, err = run(capsys, "--address", f"127.0.0.1:{port}", "info")
    finally:
        bare.stop(0)
    assert code == 4 and "UNIMPLEMENTED" in err


def test_tls_flags(server_factory, tmp_path, capsys):
    from tests.client.helpers import make_certs

    certs = make_certs(tmp_path / "certs")
    srv = server_factory(tls_cert=str(certs["server.pem"]), tls_key=str(certs["server.key"]),
                         tls_client_ca=str(certs["ca.pem"]))
    flags = ["--address", srv.address, "--ca-cert", str(certs["ca.pem"])]
    code, out, _ = run(capsys, *flags, "--client-cert", str(certs["client.pem"]),
                       "--client-key", str(certs["client.key"]), "health")
    assert (code, out.strip()) == (0, "SERVING")
    code, out, _ = run(capsys, "--address", srv.address, "health", "--ca-cert", str(certs["ca.pem"]),
                       "--client-cert", str(certs["client.pem"]), "--client-key", str(certs["client.key"]))
    assert (code, out.strip()) == (0, "SERVING")  # the TLS flags after the command
    code, _, err = run(capsys, *flags, "--client-cert", str(certs["client.pem"]), "health")
    assert code == 2 and "--client-key" in err
    code, _, err = run(capsys, *flags, "--retries", "0", "--timeout", "5", "health")  # no client cert
    assert code == 3 and "Traceback" not in err


def test_client_imports_need_no_optional_packages():
    """The client extra has no onnxruntime, matplotlib or TensorFlow: importing the client,
    the CLI and the batch script must not need them (they are imported only when used)."""
    code = ("import sys\n"
            "for name in ('onnxruntime', 'matplotlib', 'tensorflow', 'tqdm', 'onnx'):\n"
            "    sys.modules[name] = None\n"
            "import cifar10_client, cifar10_client.cli, cifar10_client.batch\n"
            "assert cifar10_client.batch.build_parser()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert done.returncode == 0, done.stderr


def test_info_shows_the_models_own_accuracy(server_factory, capsys):
    bundled = server_factory(model_path=Path(__file__).resolve().parents[2] / "models" / "cifar10-cnn.onnx")
    code, out, _ = run(capsys, "--address", bundled.address, "info")
    assert code == 0
    assert "validation accuracy: 85.60 % (2,500 images)" in out
    assert "test accuracy: 85.80 % (2,500 images)" in out
