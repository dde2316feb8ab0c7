"""``hitbench weights --download``: fetch pretrained weights from their canonical URLs, when a user asks.

The one place in the suite that opens a network connection; runs never call it. It uses urllib, so
proxies come from the environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``). A download goes to
``.<name>.partial`` beside its target and is resumed from there with an HTTP Range request after an
interruption; the checksum (where one is published) is checked before the file is moved atomically to
where :func:`hitvideo_bench.weights.find` looks. A file that fails the check is deleted, never placed.
"""

from __future__ import annotations

import http.client
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from . import __version__
from .errors import BadInput, HitbenchError
from .weights import (WEIGHT_FILES, WeightInfo, check_loadable, checksum_problem, find, import_hf_folder, info,
                      is_present, registry, sha256_of)

CHUNK = 1 << 20
TIMEOUT = 60  # seconds without data before a connection counts as broken


class DownloadFailed(HitbenchError):
    """A download could not complete (offline, HTTP error, interrupted, wrong checksum)."""

    exit_code = 1

    def __init__(self, message: str, status: int | None = None):
        self.status = status
        super().__init__(message)


def fetch_url(url: str, partial: Path, *, progress: bool, label: str) -> None:
    """Download ``url`` into ``partial``, continuing from the bytes already there (Range request)."""
    from tqdm.auto import tqdm

    have = partial.stat().st_size if partial.exists() else 0
    headers = {"User-Agent": f"hitvideo-bench/{__version__}", **({"Range": f"bytes={have}-"} if have else {})}
    try:
        opener = urllib.request.build_opener()  # reads the proxy variables now, not at the first call ever made
        response = opener.open(urllib.request.Request(url, headers=headers), timeout=TIMEOUT)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the partial file is already whole
            return
        raise DownloadFailed(f"{url}: HTTP {exc.code} {exc.reason}", status=exc.code) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadFailed(f"cannot reach {urlsplit(url).netloc} ({reason}): check the network connection and "
                             "the proxy settings (HTTPS_PROXY / HTTP_PROXY); on an offline machine download "
                             f"{url} elsewhere and use `hitbench weights --import FILE`") from None
    with response:
        resumed = response.status == 206
        start = have if resumed else 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length else None
        received = start
        partial.parent.mkdir(parents=True, exist_ok=True)
        with partial.open("ab" if resumed else "wb") as out, \
                tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                     disable=not progress, leave=False) as bar:
            try:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException):
                pass  # reported below with the byte count, as a short read is
    if total is not None and received < total:
        raise DownloadFailed(f"{url}: the connection broke after {received} of {total} bytes; the partial download "
                             f"is kept at {partial}: run the same command again to resume it")


def fetch_weight(entry: WeightInfo, *, progress: bool = True) -> Path:
    """Download one registered weight (a file, or a Hugging Face model folder) and place it; returns its path."""
    if entry.kind == "hf-model":
        return _fetch_hf_model(entry, progress)
    target = entry.path
    partial = target.with_name(f".{target.name}.partial")
    fetch_url(entry.url, partial, progress=progress, label=entry.name)
    problem = checksum_problem(sha256_of(partial), entry)
    if problem:
        partial.unlink()
        raise DownloadFailed(f"{entry.url}: {problem}; the download was deleted (run again to retry, or report a "
                             "changed file upstream)")
    try:
        check_loadable(partial, entry)
    except BadInput as exc:
        partial.unlink()
        raise DownloadFailed(f"{entry.url}: {exc}") from None
    os.replace(partial, target)
    return target


def _fetch_hf_model(entry: WeightInfo, progress: bool) -> Path:
    """Fetch the model folder's files (``<url>/resolve/main/<file>``) into a staging folder, then import it."""
    staging = entry.path / ".download"
    for name in entry.files:
        _fetch_into(f"{entry.url}/resolve/main/{name}", staging / name, progress, f"{entry.name} {name}")
    for name in WEIGHT_FILES:  # the first weight format the repository has
        try:
            _fetch_into(f"{entry.url}/resolve/main/{name}", staging / name, progress, f"{entry.name} {name}")
            break
        except DownloadFailed as exc:
            if exc.status != 404:
                raise
    else:
        raise DownloadFailed(f"{entry.url}: none of {', '.join(WEIGHT_FILES)} found")
    try:
        check_loadable(staging, entry)
    except BadInput as exc:
        shutil.rmtree(staging, ignore_errors=True)  # a wrong model must be fetched again, not resumed
        raise DownloadFailed(f"{entry.url}: {exc}; the download was deleted") from None
    target = import_hf_folder(staging, entry)
    shutil.rmtree(staging, ignore_errors=True)
    return target


def _fetch_into(url: str, target: Path, progress: bool, label: str) -> None:
    if target.is_file():  # fetched whole by an earlier, interrupted call
        return
    partial = target.with_name(f".{target.name}.partial")
    fetch_url(url, partial, progress=progress, label=label)
    os.replace(partial, target)


def download(names: list[str] | None = None, progress: bool = True) -> Iterator[tuple[WeightInfo, str]]:
    """Fetch weights ``names`` (default: every downloadable one) from their canonical URLs into the caches
    :func:`~hitvideo_bench.weights.find` reads, skipping those present; yields ``(entry, what happened)`` as each
    one is done. Unknown names are rejected before anything is fetched."""
    entries = [info(n) for n in names] if names else [e for e in registry().values() if e.kind != "package"]
    for entry in entries:
        if entry.kind == "package":
            raise BadInput(f"{entry.name}: ships with the {entry.package} package, nothing to download; "
                           f"{entry.hint()}")
    for entry in entries:
        if is_present(entry.name):
            yield entry, f"present: {find(entry.name)}"
        else:
            yield entry, f"downloaded: {fetch_weight(entry, progress=progress)}"


__all__ = ["DownloadFailed", "download", "fetch_url", "fetch_weight"]
