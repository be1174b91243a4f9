import sys

from cifar10_training.cli import main

sys.exit(main())
