"""The default data works on any machine (issue 32): ``--data fetch`` is ``$CIFAR10_DATA``,
else data in the cache folder, else the official archive downloaded once; with none and no
network, one line naming --data and CIFAR10_DATA. No default names the authors' ../shared,
and what a run exports names its data without a path."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cifar10_training import config, data, fetch
from tests.ports import free_port
from tests.training import cifar_files
from tests.training.test_fetch import archive, http_server, md5  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(Path(sys.executable).parent / "cifar10-train")


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIFAR10_DATA")}
    return {**env, **values}


def test_the_default_is_fetch_and_no_default_names_shared():
    assert config.TrainConfig().data == data.FETCH == fetch.SOURCE
    assert all(config.for_recipe(r).data == "fetch" for r in config.RECIPE_NAMES)
    for path in sorted((ROOT / "training" / "cifar10_training").glob("*.py")):
        assert "shared/data" not in path.read_text(), path.name
    makefile = (ROOT / "Makefile").read_text()
    (default,) = re.findall(r"^DATA\s*\?=(.*)$", makefile, re.M)
    assert default.strip() == ""
    assert "shared/" not in "\n".join(line for line in makefile.splitlines() if "DATA" in line)


def test_fetch_prefers_cifar10_data_then_the_cache_then_a_download(tmp_path, archive, http_server):  # noqa: F811
    url, requests = http_server
    folder = cifar_files.write_image_folder(tmp_path / "mine" / "train", per_class=1)
    cache = tmp_path / "cache"
    env = {"CIFAR10_DATA": str(folder.parent), "CIFAR10_DATA_CACHE": str(cache), "CIFAR10_DATA_URL": url}
    assert fetch.default_source(env) == folder
    # CIFAR10_DATA empty or holding nothing: the cache folder, downloaded into once.
    empty = tmp_path / "empty"
    empty.mkdir()
    env["CIFAR10_DATA"] = str(empty)
    with pytest.raises(fetch.FetchError, match="MD5"):  # a mirror must serve the official file
        fetch.default_source(env)
    assert not list(cache.glob("*"))
    (cache / fetch.ARCHIVE).write_bytes(archive.read_bytes())  # as if downloaded before
    assert fetch.default_source(env) == cache / fetch.ARCHIVE
    # Data put into the cache folder by hand, in another layout, is found too.
    (cache / fetch.ARCHIVE).unlink()
    by_hand = cifar_files.write_image_folder(cache / "train", per_class=1)
    assert fetch.default_source(env) == by_hand
    assert len(requests) == 1


def test_load_fetch_reads_the_resolved_data_and_describes_it_without_a_path(tmp_path, archive, monkeypatch):  # noqa: F811
    monkeypatch.setenv("CIFAR10_DATA", str(archive))
    loaded = data.load("fetch", progress=False)
    assert len(loaded) == 5 * 2 * 10
    assert str(archive) in loaded.source
    assert loaded.description == "CIFAR-10 archive cifar-10-python.tar.gz, train batches (100 images)"
    folder = data.load(cifar_files.write_image_folder(tmp_path / "jpeg" / "train", per_class=1), progress=False)
    assert folder.description == "image folder jpeg/train (10 images)"
    assert str(tmp_path) not in folder.description


def test_no_data_and_no_network_is_one_line_naming_data_and_cifar10_data(tmp_path):
    closed = f"http://127.0.0.1:{free_port()}/{fetch.ARCHIVE}"
    started = time.monotonic()
    done = subprocess.run([SCRIPT, "train", "--run-dir", "run", "--epochs", "1"], cwd=tmp_path,
                          env=_env(CIFAR10_DATA_CACHE=str(tmp_path / "cache"), CIFAR10_DATA_URL=closed),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"cifar10-train: error: no CIFAR-10 data: cannot download {closed}")
    assert "--data" in lines[0] and "CIFAR10_DATA" in lines[0]
    assert time.monotonic() - started < 30
    assert not (tmp_path / "run").exists()
    assert not list((tmp_path / "cache").glob("*"))
