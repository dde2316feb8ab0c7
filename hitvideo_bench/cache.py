"""Content-addressed cache of trained components (tokenizers, generators, probes).

A trained component lives in ``<cache root>/<kind>/<name>-<hash>/`` where the hash covers its
resolved config, its training data identity and its seed. A later recipe that needs the same
component finds it there instead of training again. The folder is complete once it holds the
``COMPLETE`` marker (written last, atomically); an incomplete folder holds a resumable checkpoint.
Processes that need the same component at once (``hitbench run --jobs``, or two recipes started
side by side) take turns through :func:`training_lock`: one trains it, the others then load it.

The root is ``$HITBENCH_CACHE`` if set, else ``~/.cache/hitbench``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .distributed import barrier, is_main_process
from .io import read_json, write_json

MARKER = "COMPLETE"


def cache_root() -> Path:
    """Where trained components are cached."""
    return Path(os.environ.get("HITBENCH_CACHE") or Path.home() / ".cache" / "hitbench")


def stable_hash(obj: Any, length: int = 12) -> str:
    """Hash of a JSON-able object that does not depend on key order."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def component_dir(kind: str, name: str, identity: dict[str, Any]) -> Path:
    """The cache folder of a component identified by ``identity`` (config, data, seed, versions)."""
    return cache_root() / kind / f"{name}-{stable_hash(identity)}"


def is_complete(path: Path) -> bool:
    return (Path(path) / MARKER).exists()


def mark_complete(path: Path, summary: dict[str, Any]) -> None:
    """Record that the component in ``path`` is fully trained; ``summary`` is kept beside it."""
    write_json(Path(path) / MARKER, summary)


def read_summary(path: Path) -> dict[str, Any]:
    return read_json(Path(path) / MARKER)


@contextlib.contextmanager
def training_lock(path: Path) -> Iterator[None]:
    """Hold the lock of the component folder ``path`` (the hidden file ``.<name>.lock`` beside it) for the
    block: check the cache, train and mark the component complete inside it, so that of several processes
    needing the same component one trains it and the others wait, then find it complete. The lock goes with
    its process."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"hitbench: waiting for another process to finish {path}", file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


#: the sub-folder of a cache folder that its training works in (checkpoints, logs)
WORK = "train"


def cached_component(folder: Path, *, load: Callable[[], Any], train: Callable[[], tuple[Any, dict[str, Any]]],
                     save: Callable[[Any, Path], None], use_cache: bool = True) -> tuple[Any, dict[str, Any], bool]:
    """The trained thing cached in ``folder`` (a tokenizer, a generator, a metric's probe): ``load()`` when the folder
    is complete, else ``train()`` (the thing and its training summary), ``save(thing, folder)`` and the folder marked
    complete. Returns ``(thing, summary, trained_now)``. All of it under :func:`training_lock`, so that of several
    processes needing it one trains it and the others load it. Under ``torchrun`` rank 0 alone takes the lock and
    writes, the other ranks train in step with it (barriers); inside ``distributed.local_training()`` the process
    works alone. ``use_cache=False`` retrains from scratch: the previous training's work folder (:data:`WORK`) goes
    first, since its last checkpoint would resume the training at its end."""
    main = is_main_process()
    with training_lock(folder) if main else contextlib.nullcontext():
        if not use_cache and main:
            shutil.rmtree(Path(folder) / WORK, ignore_errors=True)
        barrier()  # under torchrun: rank 0 has finished writing whatever the cache holds
        if use_cache and is_complete(folder):
            return load(), read_summary(folder), False
        thing, summary = train()
        if main:
            save(thing, Path(folder))
            mark_complete(folder, summary)
        barrier()
    return thing, summary, True
