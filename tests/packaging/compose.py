"""Read docker-compose.yml the way compose does, and turn a service into a local process.

No Docker engine here, so the compose-equivalent smoke test runs what each service declares
(entrypoint/command, environment, healthcheck, falling back to the image's Dockerfile for
ENTRYPOINT, CMD, ENV, WORKDIR and COPY) as a local process. Container paths are translated to
local ones: a named volume becomes a folder under a temporary root, a bind mount its host
folder, a path the Dockerfile COPYs into the image the repository path it copied. Published
container ports become free local ports, and environment values naming them follow.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)
_BRACED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?|:\+|\+)(?P<arg>.*))?$", re.S)


def load_raw(path: Path = COMPOSE_FILE) -> dict:
    """The YAML document as written (anchors and merge keys resolved, nothing interpolated)."""
    return yaml.safe_load(path.read_text())


def interpolate(value, env: Mapping[str, str]):
    """Compose's variable interpolation over a YAML tree: ${VAR}, ${VAR:-default},
    ${VAR-default}, ${VAR:?error}, ${VAR:+alt}, $VAR, and $$ for a literal $."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match) -> str:
        if match.group("escaped"):
            return "$"
        if match.group("named"):
            return env.get(match.group("named"), "")
        parsed = _BRACED.match(match.group("braced"))
        if not parsed:
            raise ValueError(f"invalid interpolation: {match.group(0)!r}")
        name, op, arg = parsed.group("name", "op", "arg")
        current = env.get(name)
        unset_or_empty = not current
        if op is None:
            return current or ""
        if op == ":-":
            return arg if unset_or_empty else current
        if op == "-":
            return arg if current is None else current
        if op in (":?", "?"):
            if (unset_or_empty if op == ":?" else current is None):
                raise ValueError(f"required variable {name} is missing: {arg}")
            return current
        if op == ":+":
            return "" if unset_or_empty else arg
        return "" if current is None else arg  # "+"

    return _VARIABLE.sub(replace, value)


def load(env: Mapping[str, str] | None = None, path: Path = COMPOSE_FILE) -> dict:
    """The interpolated document; ``env`` stands for the shell's environment (default: none)."""
    return interpolate(load_raw(path), dict(env or {}))


def active_services(doc: dict, profiles: tuple[str, ...] = ()) -> list[str]:
    """Services that `docker compose [--profile P] up` starts, in dependency order."""
    services = doc["services"]
    active = [
        name for name, svc in services.items()
        if not svc.get("profiles") or set(svc["profiles"]) & set(profiles)
    ]
    ordered: list[str] = []

    def visit(name: str, path: tuple[str, ...] = ()) -> None:
        if name in ordered:
            return
        if name in path:
            raise ValueError(f"dependency cycle: {' -> '.join(path + (name,))}")
        for dep in depends_on(services[name]):
            visit(dep, path + (name,))
        ordered.append(name)

    for name in active:
        visit(name)
    return ordered


def depends_on(service: dict) -> dict[str, str]:
    """{service: condition}, for both the list and the long syntax."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


# --- the image side: what the service's Dockerfile contributes ---------------------------

@dataclass
class Image:
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    copies: list[tuple[Path, str]] = field(default_factory=list)
    """(local path, absolute image path) of each COPY from the build context, final stage."""


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def dockerfile_stages(dockerfile: Path) -> list[list[tuple[str, str]]]:
    """The instructions of each stage, FROM first (global ARGs before the first FROM: ``global_args``)."""
    stages: list[list[tuple[str, str]]] = []
    for keyword, rest in _instructions(dockerfile):
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, rest))
    return stages


def global_args(dockerfile: Path) -> dict[str, str]:
    """The ARGs declared before the first FROM, with their defaults ("" when none)."""
    args: dict[str, str] = {}
    for keyword, rest in _instructions(dockerfile):
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
    return args


def _exec_form(rest: str) -> list[str]:
    rest = rest.strip()
    if rest.startswith("["):
        return json.loads(rest)
    return ["/bin/sh", "-c", rest]


def parse_dockerfile(dockerfile: Path, context: Path) -> Image:
    """ENTRYPOINT, CMD, ENV, WORKDIR and build-context COPYs of the final stage."""
    image = Image()
    for keyword, rest in _instructions(dockerfile):
        if keyword == "FROM":
            image = Image()  # a new stage starts afresh (our stages build FROM a base image)
        elif keyword == "ENTRYPOINT":
            image.entrypoint = _exec_form(rest)
            image.cmd = None  # Docker resets CMD when ENTRYPOINT is set
        elif keyword == "CMD":
            image.cmd = _exec_form(rest)
        elif keyword == "WORKDIR":
            image.workdir = os.path.normpath(os.path.join(image.workdir, rest))
        elif keyword == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                image.env[key] = interpolate(value, image.env)
        elif keyword in ("COPY", "ADD"):
            parts = shlex.split(rest)
            if any(p.startswith("--from") for p in parts):
                continue
            parts = [p for p in parts if not p.startswith("--")]
            *sources, dest = parts
            dest = os.path.normpath(os.path.join(image.workdir, dest)) + ("/" if dest.endswith("/") else "")
            for src in sources:
                # A folder's contents go into dest; a file into dest/ or onto dest.
                if (context / src).is_dir() or not dest.endswith("/"):
                    target = dest
                else:
                    target = os.path.join(dest, Path(src).name)
                image.copies.append((context / src.rstrip("/"), target.rstrip("/")))
    return image


def service_image(service: dict, compose_dir: Path = ROOT) -> Image:
    build = service.get("build")
    if build is None:
        return Image()
    if isinstance(build, str):
        context, dockerfile = compose_dir / build, "Dockerfile"
    else:
        context, dockerfile = compose_dir / build.get("context", "."), build.get("dockerfile", "Dockerfile")
    return parse_dockerfile(context / dockerfile, context)


def argv(service: dict, image: Image) -> list[str]:
    """What the container runs: compose entrypoint/command over the image's."""
    def as_list(value) -> list[str]:
        return ["/bin/sh", "-c", value] if isinstance(value, str) else list(value)

    if "entrypoint" in service:
        entrypoint = as_list(service["entrypoint"])
        command = as_list(service["command"]) if "command" in service else []
    else:
        entrypoint = image.entrypoint or []
        command = as_list(service["command"]) if "command" in service else (image.cmd or [])
    return entrypoint + command


def healthcheck_argv(service: dict) -> list[str] | None:
    test = (service.get("healthcheck") or {}).get("test")
    if not test or test == ["NONE"]:
        return None
    if isinstance(test, str):
        return ["/bin/sh", "-c", test]
    kind, *rest = test
    return ["/bin/sh", "-c", rest[0]] if kind == "CMD-SHELL" else rest


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


# --- the service as a local process ---------------------------------------------------------

@dataclass
class LocalService:
    name: str
    argv: list[str]
    env: dict[str, str]
    """The complete environment for the process (os.environ, image ENV, service environment)."""
    healthcheck: list[str] | None
    ports: dict[int, int]
    """container port -> local port."""
    paths: dict[str, Path]
    """container path -> local path."""
    cwd: Path
    """The image's WORKDIR, translated; a scratch folder where it is not mapped."""

    def local_path(self, container_path: str) -> Path:
        return Path(translate(container_path, self.paths))


def translate(text: str, paths: Mapping[str, Path]) -> str:
    """Replace container paths (longest first) with local ones wherever a path starts."""
    for container in sorted(paths, key=len, reverse=True):
        pattern = re.compile(r"(?<![\w/.-])" + re.escape(container.rstrip("/")) + r"(?=/|$|[\s\"':;])")
        text = pattern.sub(lambda _m, c=container: str(paths[c]), text)
    return text


def local_service(doc: dict, name: str, volume_root: Path, compose_dir: Path = ROOT) -> LocalService:
    """``doc`` is interpolated (``load``). Named volumes live under ``volume_root/<name>``."""
    service = doc["services"][name]
    image = service_image(service, compose_dir)
    named_volumes = set((doc.get("volumes") or {}).keys())

    paths: dict[str, Path] = {}
    for src, target in image.copies:
        paths[target] = src
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            source, target = volume.get("source"), volume["target"]
        else:
            source, target = volume.split(":")[:2]
        if source in named_volumes:
            local = volume_root / source
            local.mkdir(parents=True, exist_ok=True)
        else:
            local = (compose_dir / os.path.expanduser(source)).resolve()
        paths[target] = local

    ports: dict[int, int] = {}
    for spec in service.get("ports") or []:
        container = int(spec["target"] if isinstance(spec, dict) else str(spec).rsplit(":", 1)[-1].split("/")[0])
        ports[container] = free_port()

    declared = {k: v for k, v in image.env.items() if k != "PATH"}
    declared.update(environment(service))
    for key, value in declared.items():
        value = translate(value, paths)
        if value.isdigit() and int(value) in ports:
            value = str(ports[int(value)])
        declared[key] = value

    env = dict(os.environ)
    env.update(declared)
    # The image's console scripts are this interpreter's: put its bin folder first.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    health = healthcheck_argv(service)
    cwd = Path(translate(image.workdir, paths))
    if not cwd.is_dir() or str(cwd) == image.workdir:
        cwd = volume_root / f"workdir-{name}"
        cwd.mkdir(parents=True, exist_ok=True)
    return LocalService(
        name=name,
        argv=[translate(a, paths) for a in argv(service, image)],
        env=env,
        healthcheck=[translate(a, paths) for a in health] if health else None,
        ports=ports,
        paths=paths,
        cwd=cwd,
    )


# --- running them ---------------------------------------------------------------------------

def http_door_present() -> bool:
    """Whether this checkout's server has its HTTP door (issue 28, serving/cifar10_serving/
    http_api/): the tests that run a container's command ask it too once it exists."""
    return (ROOT / "serving" / "cifar10_serving" / "http_api").is_dir()


def http_status(url: str, timeout: float = 5) -> int:
    """The status of ``GET url`` (an HTTP error's too)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def tail(path: Path, lines: int = 40) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def wait_healthy(process: subprocess.Popen, healthcheck: list[str], env: Mapping[str, str], cwd: Path,
                 log: Path, timeout: float) -> None:
    """Run the health check every half second until it passes; raise AssertionError when
    the process exits first or ``timeout`` seconds pass (the process is then stopped)."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AssertionError(f"exited {process.returncode} before healthy:\n{tail(log)}")
        check = subprocess.run(healthcheck, env=env, cwd=cwd, capture_output=True, text=True, timeout=30)
        if check.returncode == 0:
            return
        if time.monotonic() > deadline:
            stop(process)
            raise AssertionError(f"not healthy after {timeout:.0f} s ({check.stderr.strip()}):\n{tail(log)}")
        time.sleep(0.5)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the process group (started with start_new_session=True); SIGKILL after 30 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
