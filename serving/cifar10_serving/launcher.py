"""``cifar10-serve`` and ``python -m cifar10_serving``: check the serve extra, then serve.

Imports nothing heavy before the check, so an install without the ``serve`` extra (the
client's) answers with one line naming the extra, exit status 2, instead of a traceback.
"""

from __future__ import annotations

import sys

from cifar10_core.extras import MissingExtraError, require

PROG = "cifar10-serve"
SERVE_MODULES = ("onnxruntime", "prometheus_client", "grpc_reflection", "grpc_health")


def main(argv: list[str] | None = None) -> int:
    """Run the server (``cifar10_serving.startup.main``) if the serve extra is installed."""
    try:
        # Looked up, not imported: the server imports them in the order that keeps its cold
        # start short (cifar10_serving.startup).
        require("the server", "serve", *SERVE_MODULES, load=False)
    except MissingExtraError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    from cifar10_serving.startup import main as serve

    return serve(argv)


if __name__ == "__main__":
    sys.exit(main())
