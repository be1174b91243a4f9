"""`python -m cifar10_serving`: the same as `cifar10-serve`."""

import sys

from cifar10_serving.launcher import main

sys.exit(main())
