"""The models served, keyed by name and version, kept in step with their repository.

The files come from a ``cifar10_serving.dataplane.repository`` source (a repository folder,
or the one ``--model-path`` file). The source is polled every ``reload_interval_s`` and on
``request_reload()`` (SIGHUP):

* a new version (or a replaced file, or a change to its model's batching in config.json) is
  loaded, checked against the contract and warmed
  beside what is served, and only then served;
* a version gone from the disk or from its version policy stops being selected; requests
  that selected it keep it for all their rows, and its sessions are freed with the last of
  them (drained, then unloaded);
* a file that fails to load never replaces a good version: it is logged and reported once
  (``on_reload(False)``), and tried again only once it changes (or on SIGHUP);
* a model whose config.json cannot be read keeps the versions it has.

Requests name a model and optionally a version: no name, the default model; no version,
its newest version served. Anything else is ``UnknownModelError`` naming what is served.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from cifar10_core.errors import InvalidInputError, ModelLoadError, UnknownModelError, quoted
from cifar10_serving.dataplane.repository import BatchingConfig, Listing, RepositoryError, Slot
from cifar10_serving.onnx_model import FileSignature, ModelInfo, OnnxModel

log = logging.getLogger(__name__)

LoadModel = Callable[[Slot], OnnxModel]
"""``load(slot)``: the slot's file loaded, checked and warm (raising ModelLoadError)."""


class Source(Protocol):
    """What ``ModelSet`` polls (``repository.Repository``, ``repository.SingleFile``)."""

    def scan(self) -> Listing: ...

    def describe(self) -> str: ...


def _ignore(*_args: object) -> None:
    pass


def _retire(model: OnnxModel) -> None:
    """Log when a model no longer served is freed: once the last request that selected it
    is answered (its sessions and weights go with it)."""
    weakref.finalize(model, log.info, "model %s version %s unloaded: its last request answered",
                     model.name, model.version)


def _version_order(model: OnnxModel) -> tuple[int, str]:
    version = model.version
    return (int(version), "") if version.isdigit() else (0, version)


@dataclass(frozen=True)
class _Table:
    """What requests select from, replaced whole on each change (read without a lock)."""

    models: Mapping[str, tuple[OnnxModel, ...]]  # name -> versions, newest first
    default: str

    def describe(self) -> str:
        return ", ".join(f"{name!r} ({self.describe_versions(name)})" for name in self.models)

    def describe_versions(self, name: str) -> str:
        versions = [m.version for m in self.models[name]]
        return ("version " if len(versions) == 1 else "versions ") + ", ".join(map(repr, versions))


Attempt = tuple[FileSignature, BatchingConfig]
"""What loading a slot tried: the file as it was, and its batching (a refusal stands until
either changes)."""


def _attempt(slot: Slot) -> Attempt | None:
    """The slot as it is on disk now; None while its file is missing."""
    try:
        return FileSignature.of(os.stat(slot.path)), slot.batching
    except OSError:
        return None


@dataclass
class Loaded:
    """The models loaded at the start, and the files refused then (with what was tried: not
    tried again until that changes)."""

    models: dict[Slot, OnnxModel]
    refused: dict[tuple[str, str], Attempt | None]


def load_all(source: Source, load_model: LoadModel) -> Loaded:
    """The files the source's version policies choose, loaded (for the start). A lone file
    that fails fails the start (ModelLoadError); in a repository a version that fails is
    logged and left out (the policy then chooses among the others), and the start fails
    only if nothing loads."""
    try:
        listing = source.scan()
    except RepositoryError as exc:
        raise ModelLoadError(str(exc)) from None
    loaded = Loaded({}, {})
    errors: list[str] = []
    while True:
        todo = [slot for slot in listing.chosen(lambda s: s.key not in loaded.refused)
                if slot not in loaded.models]
        if not todo:
            break
        for slot in todo:
            try:
                loaded.models[slot] = load_model(slot)
            except ModelLoadError as exc:
                if slot.name is None:
                    raise
                loaded.refused[slot.key] = _attempt(slot)
                errors.append(str(exc))
                log.error("model file refused, not served: %s", exc)
    if not loaded.models:
        raise ModelLoadError(f"no model to serve in {source.describe()}"
                             + (": " + "; ".join(errors) if errors else
                                " (expected <model name>/<version>/model.onnx)"))
    return loaded


class ModelSet:
    """The models served; ``select(name, version)`` picks one for a request."""

    def __init__(self, source: Source, loaded: Loaded, *,
                 load_model: LoadModel, default_model: str | None = None,
                 reload_interval_s: float = 0.0,
                 on_models: Callable[[list[ModelInfo]], None] = _ignore,
                 on_reload: Callable[[bool], None] = _ignore) -> None:
        """``loaded``: the source's files, loaded and warm (``load_all``); ``load_model``
        loads one more. ``default_model``: the model of requests that name none (None: the
        one whose config says so, else the first by name). ``on_models(infos)``: every model
        version served, at start and after each change; ``on_reload(ok)``: each file loaded
        while serving (False: refused)."""
        self.source = source
        self.reload_interval_s = reload_interval_s
        self._load_model = load_model
        self._default_model = default_model
        self._on_models, self._on_reload = on_models, on_reload
        self._loaded: dict[tuple[str, str], tuple[Slot, OnnxModel]] = {
            slot.key: (slot, model) for slot, model in loaded.models.items()}
        self._rejected: dict[tuple[str, str], Attempt | None] = dict(loaded.refused)
        # every model object's slot, those no longer served but still answering included
        self._slots: weakref.WeakKeyDictionary[OnnxModel, Slot] = weakref.WeakKeyDictionary(
            {model: slot for slot, model in loaded.models.items()})
        self._problems: set[str] = set()
        self._config_default: str | None = None
        self._unloaded: set[str] = set()  # models unloaded through the repository API
        self._lock = threading.Lock()
        self._watcher: asyncio.Task | None = None
        self._reload_task: asyncio.Future | None = None
        self._stopped = False
        try:
            self._config_default = self._source_listing().default
        except RepositoryError as exc:
            self._problem(str(exc))
        self._table = self._build_table()
        self._on_models(self.infos())

    # -- requests -------------------------------------------------------------------------

    @property
    def default(self) -> OnnxModel:
        """The newest version of the default model."""
        table = self._table
        return table.models[table.default][0]

    def served(self) -> list[OnnxModel]:
        """Every model version served: by name, newest version first."""
        return [model for versions in self._table.models.values() for model in versions]

    def infos(self) -> list[ModelInfo]:
        """``served()``'s infos."""
        return [model.info for model in self.served()]

    def batching_of(self, model: OnnxModel) -> BatchingConfig:
        """The batching its model's config.json gave ``model`` when it was loaded."""
        slot = self._slots.get(model)
        return BatchingConfig() if slot is None else slot.batching

    def matching(self, name: str = "", version: str = "") -> list[ModelInfo]:
        """The versions a query names: every version served (no name), every version of a
        model (no version), or the one; UnknownModelError as ``select``."""
        if not name:
            return self.infos()
        if version:
            return [self.select(name, version).info]
        self.select(name)  # a model not served: UnknownModelError
        return [model.info for model in self._table.models.get(name, ())]

    def select(self, name: str = "", version: str = "") -> OnnxModel:
        """The model named ``name`` at ``version`` ('': the default model, its newest
        version), else UnknownModelError naming what is served."""
        table = self._table  # one read: the table checked is the table answered from
        versions = table.models.get(name or table.default)
        if versions is None:
            raise UnknownModelError(f"unknown model {quoted(name)}: this server serves "
                                    f"{table.describe()}")
        if not version:
            return versions[0]
        for model in versions:
            if model.version == version:
                return model
        raise UnknownModelError(
            f"unknown version {quoted(version)} of model {name or table.default!r}: this server "
            f"serves {table.describe_versions(name or table.default)}")

    def _build_table(self) -> _Table:
        by_name: dict[str, list[OnnxModel]] = {}
        for _, model in self._loaded.values():
            by_name.setdefault(model.name, []).append(model)
        models = {name: tuple(sorted(versions, key=_version_order, reverse=True))
                  for name, versions in sorted(by_name.items())}
        default = next(iter(models))
        for wanted in (self._default_model, self._config_default):
            if wanted is not None:
                if wanted in models:
                    default = wanted
                    break
                self._problem(f"the default model {wanted!r} is not served; {default!r} is "
                              "the default")
        return _Table(models, default)

    def _problem(self, message: str) -> None:
        if message not in self._problems:  # logged once, not on every poll
            self._problems.add(message)
            log.error("model repository: %s", message)

    # -- changes while serving --------------------------------------------------------------

    def reload(self, retry: bool = True) -> bool:
        """Bring the served models in step with the source (blocking: run it off the event
        loop). ``retry``: load again files refused before even if unchanged (SIGHUP), and a
        lone file even if unchanged. True if what is served changed."""
        with self._lock:
            try:
                listing = self._source_listing()
            except RepositoryError as exc:
                self._problem(f"{exc}; serving the models loaded")
                return False
            return self._apply(listing, retry)

    def _apply(self, listing: Listing, retry: bool) -> bool:
        """Load what ``listing`` adds or changes, stop serving what it leaves out."""
        changed, tried = False, set()
        if listing.default != self._config_default:  # a config.json's "default" changed
            self._config_default = listing.default
            self._publish()
            changed = True
        if retry:
            for key in [k for k in self._rejected if listing.covers(k)]:
                del self._rejected[key]
        while True:  # a refused file leaves its policy to choose another version
            plan = self._plan(listing)
            todo = [slot for slot in plan.values() if self._needs_load(slot, retry, tried)]
            if not todo:
                break
            for slot in todo:
                tried.add(slot.key)
                changed |= self._refresh(slot)
        for key in self._removals(listing, plan):
            _, model = self._loaded.pop(key)
            self._publish()
            log.info("model %s version %s no longer served (unloaded once its requests "
                     "are answered)", model.name, model.version)
            _retire(model)
            changed = True
        return changed

    def _source_listing(self) -> Listing:
        listing = self.source.scan()
        for problem in listing.problems:
            self._problem(problem)
        return listing

    def _plan(self, listing: Listing) -> dict[tuple[str, str], Slot]:
        """The files to serve now: the policies' choice among the files loaded and those
        not refused as they are."""
        def usable(slot: Slot) -> bool:
            if slot.name in self._unloaded:
                return False
            if slot.key in self._loaded:
                return True  # a refused replacement leaves the loaded file served
            attempt = _attempt(slot)
            return attempt is not None and self._rejected.get(slot.key, False) != attempt

        return {slot.key: slot for slot in listing.chosen(usable)}

    def _needs_load(self, slot: Slot, retry: bool, tried: set[tuple[str, str]]) -> bool:
        if slot.key in tried:
            return False
        attempt = _attempt(slot)
        if attempt is None:
            return False  # gone for now (being replaced?): keep what is served
        current = self._loaded.get(slot.key)
        if current is None or (current[1].signature, current[0].batching) != attempt:
            return self._rejected.get(slot.key, False) != attempt
        return retry and slot.name is None  # SIGHUP reloads a lone file as it is

    def _removals(self, listing: Listing, plan: Mapping[tuple[str, str], Slot]
                  ) -> list[tuple[str, str]]:
        """The loaded versions to stop serving; none if that would leave nothing served."""
        removals = [key for key in self._loaded
                    if key not in plan and listing.covers(key) and key[0] not in listing.held]
        if removals and len(removals) == len(self._loaded):
            self._problem(f"nothing to serve in {self.source.describe()}; still serving "
                          "the models loaded")
            return []
        return removals

    def _refresh(self, slot: Slot) -> bool:
        """Load the slot's file beside what is served; True if it is served now."""
        attempt = _attempt(slot)
        current = self._loaded.get(slot.key)
        try:
            model = self._load_model(slot)
        except ModelLoadError as exc:
            self._rejected[slot.key] = attempt
            if current is None:
                log.error("model file refused, not served: %s", exc)
            else:
                log.error("model file refused, still serving %s version %s: %s",
                          current[1].name, current[1].version, exc)
            self._on_reload(False)
            return False
        self._rejected.pop(slot.key, None)
        self._slots[model] = slot
        self._loaded[slot.key] = (slot, model)  # requests that selected the old model keep it
        self._publish()
        if current is not None:
            _retire(current[1])
        if current is None:
            log.info("model %s version %s loaded and served", model.name, model.version)
        else:
            old = current[1]
            if old.name != model.name:
                log.warning("model name changed on reload: %s -> %s", old.name, model.name)
            log.info("model swapped: %s version %s -> %s version %s",
                     old.name, old.version, model.name, model.version)
        self._on_reload(True)
        return True

    def _publish(self) -> None:
        self._table = self._build_table()  # atomic: a request reads one table or the other
        self._on_models(self.infos())

    def _changed(self) -> bool:
        """Whether a poll has something to do (cheap: a scan and stats, no loads)."""
        try:
            listing = self.source.scan()
        except RepositoryError:
            return False
        plan = self._plan(listing)
        removals = [key for key in self._loaded
                    if key not in plan and listing.covers(key) and key[0] not in listing.held]
        return (listing.default != self._config_default
                or any(self._needs_load(slot, False, set()) for slot in plan.values())
                or 0 < len(removals) < len(self._loaded))

    # -- the repository API (Triton's repository extension) ---------------------------------

    def load(self, name: str) -> None:
        """Serve model ``name`` from the repository again, its files loaded afresh (blocking:
        run it off the event loop). UnknownModelError for a model not in the repository,
        ModelLoadError if none of its versions loads."""
        with self._lock:
            listing = self._listing_or_error()
            if name not in listing.policies and name not in listing.held:
                raise UnknownModelError(f"no model {quoted(name)} in the model repository: it "
                                        f"holds {sorted({*listing.policies, *listing.held})}")
            self._unloaded.discard(name)
            self._apply(listing.only(name), retry=True)
            if name not in self._table.models:
                raise ModelLoadError(f"no version of model {name!r} loads (details in the "
                                     "server log)")

    def unload(self, name: str) -> None:
        """Stop serving every version of model ``name`` until ``load(name)``; requests that
        selected one keep it. UnknownModelError for a model not served; InvalidInputError
        for the only model served."""
        with self._lock:
            if name not in self._table.models:
                raise UnknownModelError(f"unknown model {quoted(name)}: this server serves "
                                        f"{self._table.describe()}")
            if len(self._table.models) == 1:
                raise InvalidInputError(f"{name!r} is the only model served: load another "
                                        "before unloading it")
            self._unloaded.add(name)
            for key in [k for k, (_, model) in self._loaded.items() if model.name == name]:
                _retire(self._loaded.pop(key)[1])
            self._publish()
            log.info("model %s unloaded through the repository API (freed once its requests "
                     "are answered)", name)

    def index(self) -> list[tuple[str, str, str, str]]:
        """The repository's models as (name, version, state, reason), Triton's index: each
        version served READY (a model gone from the disk but still served too); a model
        unloaded, or whose versions all failed, UNAVAILABLE."""
        with self._lock:
            listing = self._listing_or_error()
            entries = []
            for name in sorted({*listing.policies, *listing.held, *self._table.models}):
                versions = self._table.models.get(name, ())
                entries.extend((name, model.version, "READY", "") for model in versions)
                if not versions:
                    reason = ("unloaded" if name in self._unloaded else
                              "its config.json does not read" if name in listing.held else
                              "no version loads")
                    entries.append((name, "", "UNAVAILABLE", reason))
            return entries

    def _listing_or_error(self) -> Listing:
        try:
            return self._source_listing()
        except RepositoryError as exc:
            raise ModelLoadError(str(exc)) from None

    def request_reload(self) -> None:
        """Reload in the background (SIGHUP); call on the server's event loop."""
        if self._stopped:
            return
        log.info("reload requested")
        if self._reload_task is None or self._reload_task.done():
            self._reload_task = asyncio.get_running_loop().run_in_executor(None, self.reload)

    async def _watch(self, interval: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            try:
                if not self._stopped and await loop.run_in_executor(None, self._changed):
                    log.info("%s changed; reloading", self.source.describe())
                    self._reload_task = loop.run_in_executor(None, self.reload, False)
                    await self._reload_task
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("model repository watcher failed; still serving")

    def start(self) -> None:
        """Poll the source from the running loop (if ``reload_interval_s`` > 0)."""
        if self.reload_interval_s > 0 and self._watcher is None:
            self._watcher = asyncio.ensure_future(self._watch(self.reload_interval_s))

    async def stop(self, timeout: float | None = None) -> None:
        """No more reloads: stop the watcher, let a reload under way finish."""
        self._stopped = True
        if self._watcher is not None:
            self._watcher.cancel()
            try:
                await self._watcher
            except (asyncio.CancelledError, Exception):
                pass
            self._watcher = None
        if self._reload_task is not None and not self._reload_task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._reload_task), timeout)
            except Exception:
                pass
