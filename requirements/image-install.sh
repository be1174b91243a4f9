#!/bin/sh
# The one install recipe of both images (serving/Dockerfile, training/Dockerfile), in two
# layers so that a code change never reinstalls onnxruntime or TensorFlow:
#   sh requirements/image-install.sh deps EXTRA   venv at $VIRTUAL_ENV; pip, setuptools, wheel
#        and the third-party dependencies of the project and its EXTRA, exact versions from
#        requirements/constraints.txt; needs only pyproject.toml and this folder
#   sh requirements/image-install.sh project      the project itself (no dependencies, they are
#        in place), then `pip check`; needs the source
# Run from the folder holding pyproject.toml, with VIRTUAL_ENV set and first on PATH.
set -eu
: "${VIRTUAL_ENV:?set VIRTUAL_ENV (and put \$VIRTUAL_ENV/bin first on PATH)}"
constraints=requirements/constraints.txt
case "${1:-}" in
  deps)
    extra=${2:?usage: image-install.sh deps EXTRA}
    python -m venv "$VIRTUAL_ENV"
    pip install -c "$constraints" pip setuptools wheel
    python requirements/extra_requirements.py "$extra" >/tmp/requirements.txt
    pip install -c "$constraints" -r /tmp/requirements.txt
    rm /tmp/requirements.txt
    ;;
  project)
    pip install --no-deps --no-build-isolation -c "$constraints" .
    pip check
    ;;
  *)
    echo "usage: image-install.sh deps EXTRA | project" >&2
    exit 2
    ;;
esac
