"""How examples/ was made (a maintainer's tool; nothing else needs it, and users need not run it).

    .venv/bin/python examples/make_examples.py --data PATH/TO/cifar10-jpeg/train

``--data`` is the image folder the bundled model was trained on (its 50,000 JPEG-encoded
CIFAR-10 training images, ``<class>/NNNN.jpg``; the split below is only the model's split
for that folder). From the seeded three-way split recorded in the bundled model's metadata
(``split_json``: seed 1234, 2,500 validation and 2,500 test images), only the TEST part is
used, which took no part in training or in any choice:

- ``labelled/<class>/NNNN.jpg``: PER_CLASS test-part images per class, a seeded sample
  (``numpy.random.default_rng(SEED)``), the files copied byte for byte;
- ``<class>.jpg``: per class, the first test-part image (by file name) outside the labelled
  sample that the bundled FP32 model gets right with probability at least 0.9, copied;
- ``LARGE``: one of those upscaled to 256x256 with Pillow's LANCZOS filter, saved as PNG.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

from cifar10_core import contract, datasets, images
from cifar10_training.data import three_way_split

HERE = Path(__file__).resolve().parent
MODEL = HERE.parent / "models" / "cifar10-cnn.onnx"
PER_CLASS = 40
SEED = 0
LARGE_CLASS = "ship"
LARGE = f"{LARGE_CLASS}-256.png"
LARGE_SIZE = 256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the image folder the bundled model was trained on")
    args = parser.parse_args()

    paths, labels = datasets.list_class_folder(args.data)
    labels = np.asarray(labels)
    meta = {p.key: p.value for p in onnx.load(str(MODEL)).metadata_props}
    split_meta = json.loads(meta[contract.META_SPLIT])
    test = three_way_split(labels, split_meta["val_size"], split_meta["test_size"], split_meta["split_seed"]).test
    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])

    def predict(idx: np.ndarray) -> np.ndarray:
        batch = np.stack([images.decode(paths[i].read_bytes()) for i in idx])
        return session.run([contract.OUTPUT_NAME], {contract.INPUT_NAME: batch})[0]

    test_p = predict(test)
    print(f"test part: {len(test)} images, accuracy {np.mean(test_p.argmax(1) == labels[test]):.2%}")

    labelled = HERE / "labelled"
    shutil.rmtree(labelled, ignore_errors=True)
    rng = np.random.default_rng(SEED)
    for c, name in enumerate(contract.CLASS_NAMES):
        in_class = test[labels[test] == c]
        chosen = np.sort(rng.choice(in_class, PER_CLASS, replace=False))
        (labelled / name).mkdir(parents=True)
        for i in chosen:
            shutil.copyfile(paths[i], labelled / name / paths[i].name)
        rest = [i for i in in_class if i not in set(chosen)]
        for i in rest:
            p = test_p[np.searchsorted(test, i)]
            if p.argmax() == c and p[c] >= 0.9:
                shutil.copyfile(paths[i], HERE / f"{name}{paths[i].suffix}")
                print(f"{name}: {paths[i].parent.name}/{paths[i].name} (p = {p[c]:.3f})")
                if name == LARGE_CLASS:
                    with Image.open(paths[i]) as image:
                        big = image.convert("RGB").resize((LARGE_SIZE, LARGE_SIZE), Image.Resampling.LANCZOS)
                    big.save(HERE / LARGE, optimize=True)
                    print(f"{LARGE}: {paths[i].parent.name}/{paths[i].name} upscaled")
                break


if __name__ == "__main__":
    main()
