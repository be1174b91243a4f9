"""cifar10_training.fetch: local data first, then a download once, checked and atomic.

The download is served by a real HTTP server on this machine (the official site is not
reachable here); "no network" is a port nothing listens on.
"""

from __future__ import annotations

import hashlib
import http.server
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.ports import free_port
from cifar10_training import data, fetch
from tests.training import cifar_files


@pytest.fixture
def archive(tmp_path) -> Path:
    return cifar_files.write_archive(tmp_path / "served" / fetch.ARCHIVE, per_class=2)


@pytest.fixture
def http_server(archive):
    """Serves ``archive``'s folder; yields (url of the archive, list of requested paths)."""
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(archive.parent), **kwargs)

        def log_message(self, *args):
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/{archive.name}", requests
    server.shutdown()
    server.server_close()


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_downloads_once_checks_the_md5_and_leaves_no_partial_file(tmp_path, archive, http_server):
    url, requests = http_server
    dest = tmp_path / "volume"
    got = fetch.resolve(None, dest, url, md5(archive))
    assert got == dest / fetch.ARCHIVE
    assert got.read_bytes() == archive.read_bytes()
    assert sorted(p.name for p in dest.iterdir()) == [fetch.ARCHIVE]
    assert len(data.load(got, progress=False)) == 5 * 2 * 10  # training reads what was fetched
    # Present: no second download.
    assert fetch.resolve(None, dest, url, md5(archive)) == got
    assert len(requests) == 1


def test_a_bad_checksum_keeps_nothing(tmp_path, http_server):
    url, _ = http_server
    dest = tmp_path / "volume"
    with pytest.raises(fetch.FetchError, match="expected 0{32}"):
        fetch.resolve(None, dest, url, "0" * 32)
    assert list(dest.iterdir()) == []


def test_local_data_wins_in_every_layout(tmp_path, archive):
    dest = tmp_path / "volume"  # never touched: no url would answer
    folder = cifar_files.write_image_folder(tmp_path / "images" / "train")
    batches = cifar_files.write_batches_folder(tmp_path / "extracted" / "cifar-10-batches-py")
    assert fetch.resolve(archive, dest, url="http://127.0.0.1:9/") == archive
    assert fetch.resolve(archive.parent, dest, url="http://127.0.0.1:9/") == archive
    assert fetch.resolve(folder, dest, url="http://127.0.0.1:9/") == folder
    assert fetch.resolve(folder.parent, dest, url="http://127.0.0.1:9/") == folder
    assert fetch.resolve(batches, dest, url="http://127.0.0.1:9/") == batches
    assert fetch.resolve(batches.parent, dest, url="http://127.0.0.1:9/") == batches
    assert not dest.exists()


def test_an_empty_input_folder_counts_as_none(tmp_path, archive, http_server):
    url, _ = http_server
    empty = tmp_path / "data"
    empty.mkdir()
    (empty / "README.md").write_text("put cifar-10-python.tar.gz here\n")
    assert fetch.find_local(empty) is None
    assert fetch.resolve(empty, tmp_path / "volume", url, md5(archive)) == tmp_path / "volume" / fetch.ARCHIVE


def test_a_file_that_is_no_archive_is_an_error(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(fetch.FetchError, match="not the CIFAR-10 archive"):
        fetch.find_local(notes)


def test_no_network_is_one_line_saying_what_to_do_and_exit_1(tmp_path):
    closed = f"http://127.0.0.1:{free_port()}/{fetch.ARCHIVE}"
    result = subprocess.run(
        [sys.executable, "-m", "cifar10_training.fetch", "--dest", str(tmp_path / "volume"), "--url", closed],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"cifar10 data: cannot download {closed}")
    assert "CIFAR10_DATA" in lines[0]
    assert not list((tmp_path / "volume").glob("*"))


def test_the_command_prints_the_path_to_train_on(tmp_path, archive):
    result = subprocess.run(
        [sys.executable, "-m", "cifar10_training.fetch", "--dest", str(tmp_path / "volume")],
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "CIFAR10_DATA": str(archive.parent)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{archive}\n"
