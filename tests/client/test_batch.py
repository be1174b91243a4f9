"""cifar10-batch against the real server: inputs, outputs, resume after SIGKILL, bad items,
labels and accuracy, --local parity with the server."""

from __future__ import annotations

import csv
import json
import os
import pickle
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from tests.ports import free_port
from cifar10_client.batch import main
from cifar10_client.outputs import JsonlFile
from cifar10_core.contract import CLASS_NAMES
from tests.client.helpers import image_folder, random_image, write_png

ROOT = Path(__file__).resolve().parents[2]


def batch(*argv, address=None, png=False):
    args = [str(a) for a in argv] + ["--no-progress"]
    if not png:  # matplotlib is slow to import and draw: only where the PNG is checked
        args.append("--no-confusion-matrix")
    if address:
        args += ["--address", address]
    return main(args)


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def comparable(records: list[dict]) -> dict:
    """item -> what must match between runs (error text may differ, its code may not)."""
    out = {}
    for r in records:
        if "error" in r:
            out[r["item"]] = ("error", r["error"]["code"], r["true_label"])
        else:
            out[r["item"]] = (r["label"], r["probability"], tuple(r["probabilities"].values()),
                              r["true_label"], r["model_version"])
    return out


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "train"
    image_folder(root, per_class=3, classes=CLASS_NAMES[:4])
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "README.txt").write_text("not an image, skipped by suffix")
    return root


def test_folder_to_csv_and_jsonl_with_bad_item_labels_and_resume(server, folder, tmp_path, capsys):
    out_csv, out_jsonl = tmp_path / "out" / "r.csv", tmp_path / "out" / "r.jsonl"
    code = batch(folder, "-o", out_csv, "-o", out_jsonl, "--batch-size", "4", address=server.address, png=True)
    assert code == 1  # one bad item
    records = jsonl(out_jsonl)
    assert len(records) == 13 and len({r["item"] for r in records}) == 13
    broken = [r for r in records if r["item"] == "cat/broken.jpg"][0]
    assert broken["error"]["code"] == "INVALID_ARGUMENT" and broken["true_label"] == "cat"
    good = [r for r in records if "error" not in r]
    assert all(r["true_label"] == r["item"].split("/")[0] for r in good)
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in good)
    assert {r["model_version"] for r in good} == {"1"}
    with open(out_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["item"] for r in rows} == {r["item"] for r in records}
    by_item = {r["item"]: r for r in rows}
    for r in good:
        assert by_item[r["item"]]["label"] == r["label"]
        assert float(by_item[r["item"]]["p_cat"]) == r["probabilities"]["cat"]
    out = capsys.readouterr().out
    assert "accuracy:" in out and "per-class accuracy:" in out
    assert "skipped 1 file that is not an image" in out.splitlines()  # README.txt
    png = out_csv.with_suffix(".confusion.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Rerun: nothing new; the output is unchanged; the exit code still reports the failure.
    before = out_jsonl.read_bytes()
    assert batch(folder, "-o", out_csv, "-o", out_jsonl, address=server.address) == 1
    assert out_jsonl.read_bytes() == before
    # New images appear: only they are classified.
    write_png(folder / "dog" / "new.png", random_image(999))
    assert batch(folder, "-o", out_csv, "-o", out_jsonl, address=server.address) == 1
    assert len(jsonl(out_jsonl)) == 14
    # --retry-errors: the failed item is dropped and tried again (still bad), once in the output.
    assert batch(folder, "-o", out_jsonl, "--retry-errors", address=server.address) == 1
    items = [r["item"] for r in jsonl(out_jsonl)]
    assert len(items) == len(set(items)) == 14
    (folder / "cat" / "broken.jpg").unlink()
    assert batch(folder, "-o", out_jsonl, "--retry-errors", address=server.address) == 0


def test_a_missing_plots_extra_is_said_once_per_output_with_the_install_line(server, folder, tmp_path, capsys,
                                                                              monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # the plots extra is not installed
    out, hint = tmp_path / "r.jsonl", "pip install 'cifar10-serving[plots]'"
    assert batch(folder, "-o", out, address=server.address, png=True) == 1
    assert capsys.readouterr().err.count(hint) == 1  # the run that starts the output
    assert batch(folder, "-o", out, address=server.address, png=True) == 1
    assert hint not in capsys.readouterr().err  # a rerun of it: said already
    assert batch(folder, "-o", out, "--confusion-matrix", tmp_path / "m.png", address=server.address, png=True) == 1
    assert capsys.readouterr().err.count(hint) == 1  # asked for by name: said every time


def test_local_mode_gives_the_same_outputs_as_the_server(server, folder, tiny_model_path, tmp_path):
    remote, local = tmp_path / "remote.jsonl", tmp_path / "local.jsonl"
    assert batch(folder, "-o", remote, "--batch-size", "5", address=server.address) == 1
    assert batch(folder, "-o", local, "--local", tiny_model_path, "--batch-size", "7") == 1
    assert comparable(jsonl(remote)) == comparable(jsonl(local))
    arrays = np.stack([random_image(i, size=(40, 36)) for i in range(50)])
    np.save(tmp_path / "a.npy", arrays)
    remote_csv, local_csv = tmp_path / "remote.csv", tmp_path / "local.csv"
    assert batch(tmp_path / "a.npy", "-o", remote_csv, "--concurrency", "3", "--batch-size", "8",
                 address=server.address) == 0
    assert batch(tmp_path / "a.npy", "-o", local_csv, "--local", tiny_model_path) == 0
    assert sorted(remote_csv.read_text().splitlines()) == sorted(local_csv.read_text().splitlines())


def test_sigkill_mid_run_then_resume_gives_every_input_exactly_once(server, tmp_path):
    count = 1500
    np.save(tmp_path / "many.npy", np.stack([random_image(i % 97) for i in range(count)]))
    out = tmp_path / "many.jsonl"
    command = [sys.executable, "-m", "cifar10_client.batch", str(tmp_path / "many.npy"), "-o", str(out),
               "--address", server.address, "--batch-size", "1", "--concurrency", "1", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if out.exists() and out.read_bytes().count(b"\n") >= 100:
                break
            time.sleep(0.005)
        assert process.poll() is None, "the batch run ended before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
    written = out.read_bytes().count(b"\n")
    assert 100 <= written < count
    # A crash in the middle of a write leaves a partial line: resume must cut it off.
    with open(out, "ab") as f:
        f.write(b'{"item": "12345", "true_la')
    assert batch(tmp_path / "many.npy", "-o", out, address=server.address) == 0
    items = [r["item"] for r in jsonl(out)]
    assert sorted(items, key=int) == [str(i) for i in range(count)]  # each exactly once


def test_partial_last_line_is_repaired_on_open(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"item": "a", "label": "cat"}\n{"item": "b", "la')
    writer = JsonlFile(path)
    assert writer.open() == {"a"}
    writer.close()
    assert path.read_text() == '{"item": "a", "label": "cat"}\n'


def _cifar_batch(seed: int, n: int) -> tuple[bytes, np.ndarray, list[int]]:
    images = np.stack([random_image(seed * 1000 + i) for i in range(n)])
    labels = [int(x) for x in np.random.default_rng(seed).integers(0, 10, n)]
    data = images.transpose(0, 3, 1, 2).reshape(n, 3072)  # the official row layout: R, G, B planes
    payload = {b"batch_label": b"synthetic", b"labels": labels, b"data": data,
               b"filenames": [f"{i}.png".encode() for i in range(n)]}
    return pickle.dumps(payload, protocol=2), images, labels


def test_cifar_archive_and_folder(server, tmp_path, capsys):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    train, train_images, _ = _cifar_batch(1, 6)
    test, _, test_labels = _cifar_batch(2, 4)
    (folder / "data_batch_1").write_bytes(train)
    (folder / "test_batch").write_bytes(test)
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in CLASS_NAMES]}))
    (folder / "readme.html").write_text("<html></html>")
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")

    from_archive, from_folder, from_npy = tmp_path / "a.jsonl", tmp_path / "f.jsonl", tmp_path / "n.jsonl"
    assert batch(archive, "-o", from_archive, address=server.address) == 0
    assert "accuracy:" in capsys.readouterr().out
    assert batch(folder, "-o", from_folder, address=server.address) == 0
    assert comparable(jsonl(from_archive)) == comparable(jsonl(from_folder))
    records = {r["item"]: r for r in jsonl(from_archive)}
    assert set(records) == {f"data_batch_1/{i}" for i in range(6)} | {f"test_batch/{i}" for i in range(4)}
    assert [records[f"test_batch/{i}"]["true_label"] for i in range(4)] == [CLASS_NAMES[x] for x in test_labels]
    # The pixels are read in the official layout: same answers as the HWC arrays themselves.
    np.save(tmp_path / "train.npy", train_images)
    assert batch(tmp_path / "train.npy", "-o", from_npy, address=server.address) == 0
    npy = {r["item"]: r["probabilities"] for r in jsonl(from_npy)}
    assert all(npy[str(i)] == records[f"data_batch_1/{i}"]["probabilities"] for i in range(6))
    test_only = tmp_path / "t.jsonl"
    assert batch(archive, "--split", "test", "-o", test_only, address=server.address) == 0
    assert len(jsonl(test_only)) == 4


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_cifar_archive_is_read_safely(tmp_path, capsys):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": [1]}, protocol=2))
    archive = tmp_path / "cifar.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    for source in (archive, folder):
        assert batch(source, "-o", tmp_path / "x.jsonl", "--local", "unused.onnx") == 2
        assert "refusing to load" in capsys.readouterr().err
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_npz_list_file_and_usage_errors(server, tmp_path, capsys):
    images = np.stack([random_image(i) for i in range(5)])
    np.savez(tmp_path / "d.npz", x=images, y=np.array([0, 1, 2, 3, 4]))
    assert batch(tmp_path / "d.npz", "-o", tmp_path / "d.csv", address=server.address) == 0
    assert "accuracy:" in capsys.readouterr().out
    paths = image_folder(tmp_path / "imgs", per_class=1)
    listing = tmp_path / "list.txt"
    listing.write_text("# images\n" + "\n".join(map(str, paths)) + f"\n{tmp_path / 'gone.png'}\n\n")
    assert batch(listing, "-o", tmp_path / "l.jsonl", address=server.address) == 1
    records = jsonl(tmp_path / "l.jsonl")
    assert len(records) == 4 and sum("error" in r for r in records) == 1
    # usage: unknown output format, missing input, bad numbers, a wrong array
    assert batch(listing, "-o", tmp_path / "out.txt", address=server.address) == 2
    assert batch(tmp_path / "nothing", "-o", tmp_path / "o.csv", address=server.address) == 2
    assert batch(listing, "-o", tmp_path / "o.csv", "--batch-size", "0", address=server.address) == 2
    np.save(tmp_path / "f.npy", np.zeros((2, 32, 32, 3), dtype=np.float32))
    assert batch(tmp_path / "f.npy", "-o", tmp_path / "o.csv", address=server.address) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_server_unavailable_stops_the_run_with_exit_3(tmp_path, capsys):
    np.save(tmp_path / "a.npy", np.stack([random_image(i) for i in range(3)]))
    for retries in ("2", "0"):
        code = batch(tmp_path / "a.npy", "-o", tmp_path / "o.jsonl", "--retries", retries,
                     address=f"localhost:{free_port()}")
        err = capsys.readouterr().err
        assert code == 3 and "cannot reach" in err and "Traceback" not in err
        assert not (tmp_path / "o.jsonl").read_text()  # nothing recorded for items not done


def test_local_without_onnxruntime_says_what_to_install(tmp_path, tiny_model_path):
    np.save(tmp_path / "a.npy", np.stack([random_image(0)]))
    code = ("import sys; sys.modules['onnxruntime'] = None; from cifar10_client.batch import main; "
            f"sys.exit(main([{str(tmp_path / 'a.npy')!r}, '-o', {str(tmp_path / 'o.csv')!r}, "
            f"'--local', {str(tiny_model_path)!r}, '--no-progress']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert done.returncode == 5, done.stderr
    assert "pip install" in done.stderr and "onnxruntime" in done.stderr and "Traceback" not in done.stderr


def test_limit_and_csv_resume_after_a_torn_line(server, tmp_path):
    np.save(tmp_path / "a.npy", np.stack([random_image(i) for i in range(10)]))
    out = tmp_path / "o.csv"
    assert batch(tmp_path / "a.npy", "-o", out, "--limit", "4", address=server.address) == 0
    assert len(out.read_text().splitlines()) == 1 + 4
    with open(out, "a") as f:
        f.write("7,,cat,0.5")  # a crash in the middle of a line
    assert batch(tmp_path / "a.npy", "-o", out, address=server.address) == 0
    with open(out, newline="") as f:
        items = [row["item"] for row in csv.DictReader(f)]
    assert sorted(items, key=int) == [str(i) for i in range(10)]
