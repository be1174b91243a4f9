"""Print the third-party requirements of the project and one of its extras, one a line.

    python requirements/extra_requirements.py serve      (run beside pyproject.toml)

Self-references such as ``cifar10-serving[client]`` are followed, so the list is what
``pip install ".[serve]"`` would resolve, without the project's own code: the images install
it (with requirements/constraints.txt) in a layer of its own, before the source is copied
(requirements/image-install.sh). Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path


def requirements(pyproject: dict, extra: str) -> list[str]:
    project = pyproject["project"]
    extras = project["optional-dependencies"]
    self_ref = re.compile(re.escape(project["name"]) + r"\[([^]]+)\]")

    def of(name: str) -> list[str]:
        if name not in extras:
            raise SystemExit(f"no extra {name!r} in pyproject.toml (extras: {', '.join(extras)})")
        out = []
        for req in extras[name]:
            match = self_ref.fullmatch(req.replace(" ", ""))
            out += [r for e in match.group(1).split(",") for r in of(e)] if match else [req]
        return out

    return list(dict.fromkeys(project["dependencies"] + of(extra)))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: extra_requirements.py EXTRA")
    print("\n".join(requirements(tomllib.loads(Path("pyproject.toml").read_text()), sys.argv[1])))
