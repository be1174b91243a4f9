"""The models served, keyed by name and version, and the hot reload of their files.

Today one model file is served (``--model-path``); it is watched and reloaded when it
changes, or on ``request_reload()`` (SIGHUP). A new file is loaded, checked against the
contract and warmed beside the current model and only then swapped in; a bad file never
replaces a good model. Requests that selected the old model keep it for all their rows.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable

from cifar10_core.errors import ModelLoadError, UnknownModelError, quoted
from cifar10_serving.onnx_model import FileSignature, ModelInfo, OnnxModel

log = logging.getLogger(__name__)


def _ignore(*_args: object) -> None:
    pass


class ModelSet:
    """The models served; ``select(name, version)`` picks one for a request."""

    def __init__(self, model: OnnxModel, *, load_model: Callable[[str], OnnxModel],
                 model_path: str, reload_interval_s: float = 0.0,
                 on_model: Callable[[ModelInfo], None] = _ignore,
                 on_reload: Callable[[bool], None] = _ignore) -> None:
        """``model``: loaded and warm; ``load_model(path)`` loads a replacement (raising
        ModelLoadError); ``model_path``: the file watched every ``reload_interval_s`` (0: only
        on request). ``on_model(info)``: the model served, at start and on each swap;
        ``on_reload(swapped)``: each reload."""
        self._current = model
        self._load_model = load_model
        self.model_path = model_path
        self.reload_interval_s = reload_interval_s
        self._on_model, self._on_reload = on_model, on_reload
        self._lock = threading.Lock()
        self._rejected: FileSignature | None = None
        self._watcher: asyncio.Task | None = None
        self._reload_task: asyncio.Future | None = None
        self._stopped = False
        on_model(model.info)

    @property
    def default(self) -> OnnxModel:
        return self._current

    def infos(self) -> list[ModelInfo]:
        """Every model served (for listings)."""
        return [self._current.info]

    def select(self, name: str = "", version: str = "") -> OnnxModel:
        """The model named ``name`` at ``version`` ('' matches the default model / its
        current version), else UnknownModelError naming what is served."""
        model = self._current  # one read: the model checked is the model returned
        info = model.info
        if name and name != info.name:
            raise UnknownModelError(f"unknown model {quoted(name)}: this server serves {info.name!r}")
        if version and version != info.version:
            raise UnknownModelError(
                f"unknown version {quoted(version)} of model {info.name!r}: this server serves "
                f"version {info.version!r}")
        return model

    # -- hot reload -----------------------------------------------------------------------

    def reload(self) -> bool:
        """Load the model file beside the current model and swap if it is valid (blocking:
        run it off the event loop). True if swapped; a bad file is logged and kept out."""
        with self._lock:
            old = self._current
            try:
                new = self._load_model(self.model_path)
            except ModelLoadError as exc:
                try:
                    self._rejected = FileSignature.of(os.stat(self.model_path))
                except OSError:
                    self._rejected = None
                log.error("model reload rejected, still serving %s version %s: %s",
                          old.name, old.version, exc)
                self._on_reload(False)
                return False
            self._current = new  # atomic swap; requests that selected `old` keep it
            self._rejected = None
            if new.name != old.name:
                log.warning("model name changed on reload: %s -> %s", old.name, new.name)
            log.info("model swapped: %s version %s -> %s version %s",
                     old.name, old.version, new.name, new.version)
            self._on_reload(True)
            self._on_model(new.info)
            return True

    def _file_changed(self) -> bool:
        try:
            current = FileSignature.of(os.stat(self.model_path))
        except OSError:
            return False  # missing for now (being replaced?): keep serving, look again later
        return current != self._current.signature and current != self._rejected

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
                if self._file_changed() and not self._stopped:
                    log.info("model file %s changed; reloading", self.model_path)
                    self._reload_task = loop.run_in_executor(None, self.reload)
                    await self._reload_task
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("model file watcher failed; still serving")

    def start(self) -> None:
        """Watch the model file from the running loop (if ``reload_interval_s`` > 0)."""
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
