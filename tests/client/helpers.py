"""Small helpers for the client tests: synthetic images, certificates."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

from cifar10_core.contract import CLASS_NAMES


def random_image(seed: int, size=(32, 32), channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) + ((channels,) if channels > 1 else ())
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")
    return path


def image_folder(root: Path, per_class: int = 2, classes=CLASS_NAMES[:3]) -> list[Path]:
    """``root/<class>/<n>.png`` for a few classes; returns the paths."""
    paths = []
    for c, name in enumerate(classes):
        for i in range(per_class):
            paths.append(write_png(root / name / f"{i}.png", random_image(100 * c + i)))
    return paths


def make_certs(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for localhost and a client certificate (openssl CLI)."""
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=test-ca")
    for name, ext in (("server", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
                      ("client", "extendedKeyUsage=clientAuth")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name if name == 'client' else 'localhost'}")
        (folder / f"{name}.ext").write_text(ext + "\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return {n: folder / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


def grpc_attempts(address: str) -> int:
    """RPC attempts gRPC has made so far on this process's channels to ``address``.

    Read from channelz (on by default in gRPC core): each try, retries included, is a call
    on a subchannel, while the application sees one call. Counts only attempts that reached
    a connection.
    """
    import json

    from grpc._cython import cygrpc  # channelz's own accessor, as grpcio-channelz uses it

    total = 0
    for channel in json.loads(cygrpc.channelz_get_top_channels(0)).get("channel", []):
        if not channel.get("data", {}).get("target", "").endswith(address):
            continue
        for ref in channel.get("subchannelRef", []):
            sub = json.loads(cygrpc.channelz_get_subchannel(int(ref["subchannelId"])))["subchannel"]
            total += int(sub.get("data", {}).get("callsStarted", 0))
    return total
