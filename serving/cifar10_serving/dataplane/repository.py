"""Where the model files to serve are: a model repository folder, or one file.

A repository has TensorFlow Serving's and Triton's layout::

    <repository>/<model name>/<version>/model.onnx     versions: positive integers
    <repository>/<model name>/config.json              optional

``config.json`` (JSON: read by the standard library, and a file a script can write) holds
the model's version policy, whether it is the default model, and its own largest batch and
model runs at a time (else the server's ``--max-batch-size`` and ``--instances``), every key
optional::

    {"version_policy": {"latest": 2}, "default": true, "max_batch_size": 16, "instances": 1}

The version policy is Triton's: ``{"latest": N}`` the newest N versions (the default,
N = 1), ``{"all": {}}`` every version, ``{"specific": [1, 3]}`` those listed. Folders
whose names are not positive integers, hidden folders (``.tmp``, Kubernetes' ``..data``)
and version folders without ``model.onnx`` are not versions. The model's name is its
folder's, its version the version folder's, whatever the file's metadata says.

``--model-path FILE`` is a repository of one (``SingleFile``): the file's metadata names
the model and its version, as before repositories. ``scan()`` reads the disk on each call
(the ``ModelSet`` polls it) and lists every model file; ``Listing.chosen`` applies the
version policies to those that load (a broken newest version leaves the one before it
served). Nothing here loads a model.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.json"
_BATCHING_KEYS = ("max_batch_size", "instances")
_CONFIG_KEYS = {"version_policy", "default", *_BATCHING_KEYS}


class RepositoryError(ValueError):
    """A repository, or one model's config, that cannot be read as the layout says."""


@dataclass(frozen=True)
class VersionPolicy:
    """Which of a model's versions are served: the newest ``latest``, ``every`` one, or
    those ``specific``."""

    latest: int = 1
    every: bool = False
    specific: tuple[int, ...] = ()

    def choose(self, versions: Iterable[int]) -> list[int]:
        """The versions served out of those on disk, newest first."""
        newest_first = sorted(set(versions), reverse=True)
        if self.every:
            return newest_first
        if self.specific:
            return [v for v in newest_first if v in self.specific]
        return newest_first[:self.latest]

    @classmethod
    def parse(cls, value: object) -> VersionPolicy:
        """From config.json's ``version_policy``; RepositoryError for anything else."""
        if not isinstance(value, dict) or len(value) != 1:
            raise RepositoryError('version_policy must be one of {"latest": N}, {"all": {}}, '
                                  '{"specific": [versions]}')
        (kind, arg), = value.items()
        if kind == "latest" and _positive(arg):
            return cls(latest=arg)
        if kind == "all" and arg in ({}, True):
            return cls(every=True)
        if kind == "specific" and isinstance(arg, list) and arg and all(map(_positive, arg)):
            return cls(specific=tuple(sorted(set(arg))))
        raise RepositoryError(f"version_policy {json.dumps(value)}: latest takes a positive "
                              "integer, all takes {}, specific a list of positive integers")

    def describe(self) -> str:
        if self.every:
            return "all"
        if self.specific:
            return "specific " + ", ".join(map(str, self.specific))
        return f"latest {self.latest}"


def _positive(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True)
class BatchingConfig:
    """A model's own largest merged batch and model runs at a time (Triton's
    ``max_batch_size`` and ``instance_group`` count); None: the server's setting."""

    max_batch_size: int | None = None
    instances: int | None = None

    @classmethod
    def parse(cls, data: Mapping[str, object]) -> BatchingConfig:
        """From config.json's keys; RepositoryError for a value that is not a positive integer."""
        for key in _BATCHING_KEYS:
            if key in data and not _positive(data[key]):
                raise RepositoryError(f"{key} must be a positive integer, got {json.dumps(data[key])}")
        return cls(**{key: data[key] for key in _BATCHING_KEYS if key in data})


@dataclass(frozen=True)
class ModelConfig:
    """One model's config.json."""

    policy: VersionPolicy = VersionPolicy()
    default: bool = False
    batching: BatchingConfig = BatchingConfig()

    @classmethod
    def read(cls, folder: Path) -> ModelConfig:
        """The model folder's config.json, or the defaults without one; RepositoryError."""
        path = folder / CONFIG_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            raise RepositoryError(f"cannot read {path}: {exc.strerror}") from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise RepositoryError(f"{path} is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise RepositoryError(f"{path} must hold a JSON object")
        unknown = sorted(set(data) - _CONFIG_KEYS)
        if unknown:
            raise RepositoryError(f"{path}: unknown keys {unknown} (known: {sorted(_CONFIG_KEYS)})")
        default = data.get("default", False)
        if not isinstance(default, bool):
            raise RepositoryError(f"{path}: default must be true or false")
        try:
            policy = VersionPolicy.parse(data["version_policy"]) if "version_policy" in data \
                else VersionPolicy()
            batching = BatchingConfig.parse(data)
        except RepositoryError as exc:
            raise RepositoryError(f"{path}: {exc}") from None
        return cls(policy, default, batching)


@dataclass(frozen=True)
class Slot:
    """One model file to serve. ``name`` and ``version`` None: the file's metadata says.
    ``batching``: its model's config.json's (a change reloads the version)."""

    path: str
    name: str | None = None
    version: str | None = None
    batching: BatchingConfig = BatchingConfig()

    @property
    def key(self) -> tuple[str, str]:
        """What stays the same while the slot's file is replaced."""
        return ("", self.path) if self.name is None else (self.name, self.version or "")


@dataclass(frozen=True)
class Listing:
    """What a scan found: every model file on disk (``slots``), each model's version policy,
    the model the configs call the default, the models whose config could not be read
    (their loaded versions are kept as they are) and what was wrong with them."""

    slots: tuple[Slot, ...]
    policies: Mapping[str, VersionPolicy] = field(default_factory=dict)
    default: str | None = None
    held: frozenset[str] = frozenset()
    problems: tuple[str, ...] = ()
    scope: str | None = None  # a model name: the listing speaks for that model only

    def covers(self, key: tuple[str, str]) -> bool:
        """Whether a slot's key (``Slot.key``) belongs to what this listing speaks for."""
        return self.scope is None or key[0] == self.scope

    def only(self, name: str) -> Listing:
        """This listing restricted to model ``name``: the other models' versions are left
        as they are when it is applied."""
        return dataclasses.replace(
            self, slots=tuple(s for s in self.slots if s.name == name), scope=name,
            held=self.held & {name})

    def chosen(self, usable: Callable[[Slot], bool]) -> list[Slot]:
        """The files to serve: each model's versions chosen by its policy among the
        ``usable`` ones (a file that failed to load is not), newest first; a lone file
        whenever it is usable."""
        by_name: dict[str | None, list[Slot]] = {}
        for slot in self.slots:
            if usable(slot):
                by_name.setdefault(slot.name, []).append(slot)
        chosen: list[Slot] = []
        for name, slots in by_name.items():
            if name is None:
                chosen.extend(slots)
                continue
            versions = {int(slot.version or 0): slot for slot in slots}
            chosen.extend(versions[v] for v in self.policies.get(name, VersionPolicy()).choose(versions))
        return chosen


class SingleFile:
    """``--model-path``: a repository of one file."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)

    def scan(self) -> Listing:
        return Listing((Slot(self.path),))

    def describe(self) -> str:
        return self.path


class Repository:
    """``--model-repository``: a folder of models, each a folder of versions."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def describe(self) -> str:
        return str(self.root)

    def scan(self) -> Listing:
        """The versions to serve as the disk says now. RepositoryError if the repository
        folder itself cannot be listed."""
        try:
            models = sorted(p for p in self.root.iterdir() if _visible(p) and p.is_dir())
        except OSError as exc:
            raise RepositoryError(f"cannot list the model repository {self.root}: "
                                  f"{exc.strerror or exc}") from None
        slots: list[Slot] = []
        policies: dict[str, VersionPolicy] = {}
        defaults: list[str] = []
        held: set[str] = set()
        problems: list[str] = []
        for folder in models:
            try:
                config = ModelConfig.read(folder)
            except RepositoryError as exc:
                held.add(folder.name)
                problems.append(str(exc))
                continue
            if config.default:
                defaults.append(folder.name)
            policies[folder.name] = config.policy
            for version in sorted(_versions(folder), reverse=True):
                slots.append(Slot(str(folder / str(version) / MODEL_FILE), folder.name, str(version),
                                  config.batching))
        if len(defaults) > 1:
            problems.append(f"several models say they are the default: {defaults}; "
                            f"{defaults[0]!r} is")
        return Listing(tuple(slots), policies, defaults[0] if defaults else None,
                       frozenset(held), tuple(problems))


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _versions(folder: Path) -> list[int]:
    """The model folder's version folders that hold a model file."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    return [int(p.name) for p in entries
            if _version_name(p.name) and (p / MODEL_FILE).is_file()]


def _version_name(name: str) -> bool:
    """A positive integer written plainly (not ``01``, which would be a second ``1``)."""
    return name.isascii() and name.isdigit() and name == str(int(name)) and int(name) > 0


def source_of(model_repository: str | None, model_path: str | None,
              default_repository: str) -> SingleFile | Repository:
    """The repository named by the settings: a folder, or the one file, else the default
    folder."""
    if model_path and not model_repository:
        return SingleFile(model_path)
    return Repository(model_repository or default_repository)
