"""What keeps the server's cold start short (cifar10_serving.startup), each piece checked."""

from __future__ import annotations

import gc
import io
import subprocess
import sys

from cifar10_serving.process.memory import CycleCollector


def test_collection_is_paused_during_start_up_and_resumes_at_freeze():
    assert gc.isenabled()
    try:
        CycleCollector.pause()
        assert not gc.isenabled()
        CycleCollector.freeze()
        assert gc.isenabled()
    finally:
        gc.unfreeze()
        gc.enable()


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_model_check_imports_no_numpy_random():
    out = _run("""
import sys
import numpy as np
from cifar10_core import contract
seen = []
def predict(images):
    seen.append(images.copy())
    return np.full((len(images), 10), 0.1, np.float32)
contract.check_answers(predict, "m", (1, 8))
contract.check_answers(predict, "m", (1, 8))
assert [len(a) for a in seen] == [1, 8, 1, 8]
assert (seen[0] == seen[2]).all() and (seen[1] == seen[3]).all()  # fixed images
assert len(set(seen[1].ravel().tolist())) > 200  # noise, not a flat image
print("numpy.random" in sys.modules)
""")
    assert out.split() == ["False"]


def test_pillow_is_imported_only_when_needed_and_only_the_accepted_formats():
    from PIL import Image

    encoded = {}
    for name in ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "PPM"):
        buf = io.BytesIO()
        Image.new("RGB", (40, 30), (200, 10, 10)).save(buf, name)
        encoded[name] = buf.getvalue()
    out = _run(f"""
import sys
from cifar10_core import images
assert "PIL" not in sys.modules  # importing the module does not import Pillow
print(images.from_raw_bytes(bytes(3072), 32, 32, 3).shape == (32, 32, 3), "PIL" in sys.modules)
for data in {list(encoded.values())!r}:
    assert images.decode(data).shape == (32, 32, 3)
plugins = sorted(m.split(".")[1] for m in sys.modules if m.startswith("PIL.") and m.endswith("ImagePlugin"))
print(" ".join(plugins))
""")
    first, plugins = out.splitlines()
    assert first == "True False"  # a 32x32 raw image needs no Pillow
    assert plugins.split() == sorted(f"{name}ImagePlugin" for name in
                                     ("Bmp", "Gif", "Jpeg", "Png", "Ppm", "Tiff", "WebP"))
