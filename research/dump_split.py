"""Write the seeded split's training and validation parts (never the test part) to an npz for
``airbench94_torch.py``, which runs outside this project's environment.

    .venv/bin/python research/dump_split.py DATA OUT.npz [--shuffle]

``--shuffle`` puts the training part in a seeded random order, as CIFAR-10's own arrays are
(airbench94 whitens on the first 5,000); without it, the order the data loads in (an image
folder: class by class).
"""

import argparse

import numpy as np

from cifar10_training import data
from cifar10_training.config import TrainConfig

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("data")
parser.add_argument("out")
parser.add_argument("--shuffle", action="store_true")
args = parser.parse_args()
config = TrainConfig(data=args.data)
images = data.load(args.data, progress=False)
split = data.three_way_split(images.labels, config.val_size, config.test_size, config.split_seed)
train = np.random.default_rng(config.split_seed).permutation(split.train) if args.shuffle else split.train
np.savez(args.out, x_train=images.images[train], y_train=images.labels[train],
         x_val=images.images[split.val], y_val=images.labels[split.val])
print(f"{args.out}: {len(train)} training, {len(split.val)} validation images")
