"""`python -m serving`: the same as `cifar10-serve`."""

import sys

from serving.server import main

sys.exit(main())
