"""Find the CIFAR-10 training data, downloading the official archive when there is none.

``python -m cifar10_training.fetch`` prints the path ``cifar10-train train --data`` takes
(docker-compose.yml's ``train`` service runs it first):

1. ``--input`` (or ``CIFAR10_DATA``), when it holds data: the official archive
   (``cifar-10-python.tar.gz`` or any ``.tar.gz``), ``cifar-10-batches-py/``, an image folder
   ``<class>/*.jpg`` or a folder holding ``train/<class>/``, or a folder holding one of those.
   An empty folder (or one with only a README) counts as none.
2. ``--dest/cifar-10-python.tar.gz`` (``CIFAR10_DATA_CACHE``), downloaded before.
3. Otherwise the official archive is downloaded into ``--dest``: with progress, its MD5
   checked, written atomically (a temporary file in the same folder, then renamed), so an
   interrupted download never leaves a partial archive under the real name.

Any failure (no network, a bad checksum, an unusable ``--input``) is one line on stderr
saying what to do, and exit status 1.

``cifar10-train --data fetch`` (its default) resolves the same way (``default_source``):
``CIFAR10_DATA`` when it holds data, else data already in ``CIFAR10_DATA_CACHE`` (default
``data/``, in any layout above), else the archive downloaded there once
(``CIFAR10_DATA_URL`` names a mirror of the same file).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
import urllib.request
from pathlib import Path

from cifar10_core import contract, datasets

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE = "cifar-10-python.tar.gz"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


SOURCE = "fetch"
"""The ``--data`` value (and default) meaning "resolve as ``default_source`` does"."""
DEFAULT_CACHE = "data"
NO_NETWORK_HINT = (f"with no network, download {ARCHIVE} elsewhere and point CIFAR10_DATA at it "
                   f"(or at an image folder train/<class>/*.jpg)")


class FetchError(Exception):
    """One line for the user: what went wrong and what to do."""


def find_local(path: Path) -> Path | None:
    """The data ``path`` holds in a layout ``cifar10-train --data`` reads, or None when it
    holds none (missing, or an empty folder). A file that is not an archive is an error."""
    if not path.exists():
        return None
    if path.is_file():
        if path.name.endswith(ARCHIVE_SUFFIXES):
            return path
        raise FetchError(f"{path} is a file but not the CIFAR-10 archive ({ARCHIVE})")
    if datasets.is_batches_folder(path):
        return path
    if (path / datasets.ARCHIVE_DIR).is_dir():
        return path / datasets.ARCHIVE_DIR
    if (path / ARCHIVE).is_file():
        return path / ARCHIVE
    for folder in (path, path / "train"):
        if folder.is_dir() and any((folder / name).is_dir() for name in contract.CLASS_NAMES):
            return folder
    archives = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(ARCHIVE_SUFFIXES))
    return archives[0] if archives else None


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, target: Path, md5: str | None, timeout: float = 30.0,
             hint: str = NO_NETWORK_HINT) -> Path:
    """``url`` into ``target`` atomically (temporary file beside it, checked, renamed)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done, last = 0, 0.0
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
                done += len(block)
                if time.monotonic() - last > 5 or done == total:
                    last = time.monotonic()
                    shown = f"{done / total:.0%} of {total / 1e6:.0f} MB" if total else f"{done / 1e6:.0f} MB"
                    print(f"downloading {url}: {shown}", file=sys.stderr, flush=True)
        if md5 and (actual := md5_of(partial)) != md5:
            raise FetchError(f"{url} downloaded with MD5 {actual}, expected {md5}: run again, or "
                             f"download it yourself and pass its path as CIFAR10_DATA")
        os.replace(partial, target)
        return target
    except OSError as exc:  # URLError and timeouts are OSErrors
        reason = getattr(exc, "reason", None) or exc.strerror or exc
        raise FetchError(f"cannot download {url} ({reason}): {hint}") from None
    finally:
        partial.unlink(missing_ok=True)


def resolve(input_path: Path | None, dest: Path, url: str = URL, md5: str | None = MD5,
            hint: str = NO_NETWORK_HINT) -> Path:
    """The data to train on: local data first, then an earlier download, then a download."""
    if input_path is not None and (found := find_local(input_path)) is not None:
        return found
    cached = dest / ARCHIVE
    if cached.is_file():
        return cached
    return download(url, cached, md5, hint=hint)


def default_source(environ: dict[str, str] | None = None,
                   hint: str = NO_NETWORK_HINT) -> Path:
    """What ``--data fetch`` means: ``$CIFAR10_DATA`` when it holds data, else data in the
    cache folder ``$CIFAR10_DATA_CACHE`` (default ``data``; any layout ``find_local`` reads,
    e.g. an archive or image folder put there by hand), else the official archive
    downloaded into it once (from ``$CIFAR10_DATA_URL``, default the official address),
    its MD5 checked. FetchError (one line ending in ``hint``) when none of these works."""
    env = os.environ if environ is None else environ
    local = env.get("CIFAR10_DATA")
    if local and (found := find_local(Path(local))) is not None:
        return found
    dest = Path(env.get("CIFAR10_DATA_CACHE") or DEFAULT_CACHE)
    return resolve(dest if dest.is_dir() else None, dest, env.get("CIFAR10_DATA_URL") or URL, MD5, hint)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cifar10_training.fetch",
        description="Print the CIFAR-10 data to train on: local data when given, else the "
                    "official archive, downloaded once into DEST.")
    parser.add_argument("--input", type=Path, default=os.environ.get("CIFAR10_DATA") or None,
                        help="local data: archive, cifar-10-batches-py/ or image folder; an "
                             "empty folder counts as none [env CIFAR10_DATA]")
    parser.add_argument("--dest", type=Path, default=os.environ.get("CIFAR10_DATA_CACHE") or DEFAULT_CACHE,
                        help="folder the archive is downloaded into [env CIFAR10_DATA_CACHE; "
                             "default %(default)s]")
    parser.add_argument("--url", default=os.environ.get("CIFAR10_DATA_URL") or URL,
                        help="where to download it from [env CIFAR10_DATA_URL; default %(default)s]")
    parser.add_argument("--md5", default=MD5, help="its MD5; empty: unchecked [%(default)s]")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        path = resolve(args.input, args.dest, args.url, args.md5 or None)
    except FetchError as exc:
        print(f"cifar10 data: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
