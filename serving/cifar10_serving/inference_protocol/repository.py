"""Triton's repository extension, for both doors: the repository's index, and a model loaded
or unloaded on request (``cifar10-serve --model-control explicit``).

The gRPC door (``RepositoryIndex``, ``RepositoryModelLoad``, ``RepositoryModelUnload``) and
the REST door (``POST /v2/repository/index``, ``/v2/repository/models/{name}/load`` and
``.../unload``) parse their messages and call these. Loading reads and warms model files:
it runs on a thread, never on the event loop. A load or unload parameter (Triton's
``config`` and ``file:`` overrides) is refused: the repository on disk is the one truth;
``unload_dependents`` is accepted and means nothing (no model depends on another).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable

from cifar10_core.errors import InvalidInputError, quoted
from cifar10_serving.dataplane.models import ModelSet

# Parameters that change nothing here: Triton's clients send unload_dependents on every
# unload, and no model of ours depends on another (no ensembles).
_MEANINGLESS = frozenset({"unload_dependents"})


def _check(models: ModelSet, repository_name: str, parameters: Iterable[str] = ()) -> None:
    """InvalidInputError for another repository's name or any parameter."""
    ours = os.path.basename(os.path.normpath(models.source.describe()))
    if repository_name not in ("", ours):
        raise InvalidInputError(f"unknown repository {quoted(repository_name)}: this server "
                                f"serves one, {ours!r} (or leave the name empty)")
    names = sorted(set(parameters) - _MEANINGLESS)
    if names:
        raise InvalidInputError(f"parameters are not accepted here: {names} (the model "
                                "repository on disk says what a model is)")


async def index(models: ModelSet, repository_name: str = "", ready: bool = False) -> list[dict]:
    """Triton's index: ``[{"name", "version", "state", "reason"}]``, every model of the
    repository (``ready``: only the versions ready for inference)."""
    _check(models, repository_name)
    entries = await asyncio.get_running_loop().run_in_executor(None, models.index)
    return [{"name": name, "version": version, "state": state, "reason": reason}
            for name, version, state, reason in entries if not ready or state == "READY"]


async def load(models: ModelSet, model_name: str, repository_name: str = "",
               parameters: Iterable[str] = ()) -> None:
    """Serve ``model_name`` (again), its changed files loaded afresh."""
    _check(models, repository_name, parameters)
    await asyncio.get_running_loop().run_in_executor(None, models.load, model_name)


async def unload(models: ModelSet, model_name: str, repository_name: str = "",
                 parameters: Iterable[str] = ()) -> None:
    """Stop serving ``model_name`` until it is loaded again."""
    _check(models, repository_name, parameters)
    await asyncio.get_running_loop().run_in_executor(None, models.unload, model_name)
