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
    # The requirements of the base distribution and the extra, self-references
    # (cifar10-serving[client]) followed; the project's own code is not needed here.
    python - "$extra" >/tmp/requirements.txt <<'PY'
import re
import sys
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
self_ref = re.compile(re.escape(project["name"]) + r"\[([^]]+)\]")


def requirements(extra: str) -> list[str]:
    out = []
    for req in project["optional-dependencies"][extra]:
        match = self_ref.fullmatch(req.replace(" ", ""))
        out += [r for e in match.group(1).split(",") for r in requirements(e)] if match else [req]
    return out


print("\n".join(dict.fromkeys(project["dependencies"] + requirements(sys.argv[1]))))
PY
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
