"""Where dataset snapshots and model versions are kept.

By default in the data home: a directory per snapshot or version, renamed into place. With
``TWEETFORGE_ARTIFACTS`` set to an fsspec URL (``s3://bucket/prefix``, ``gs://…``, ``file:///shared/dir``)
every machine that points at the same store and the same URL shares them:

- content goes under its tree hash (``datasets/<name>/<hash>/``, ``models/<name>/content/<hash>/``), so no
  upload overwrites other bytes and identical content is uploaded once;
- a directory is complete when its marker (``tweetforge-artifact.json``: every file with its size and sha256)
  is there, the last object written; the database row that lists it is committed after the marker, so a
  half-upload (a killed process, a lost network) is never listed and the next run uploads again;
- a model version (``models/<name>/<version>/``) holds its two documents, README.md and tweetforge.json
  (rewritten by evaluation), and a marker naming its content directory;
- readers download into a local cache (``<home>/cache/artifacts/``), check every file's sha256 and rename the
  copy into place, so a cached directory is whole or absent.

This module stands outside the stages because snapshots (data) and versions (registry) both use it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tweetforge.errors import TweetforgeError
from tweetforge.files import staging_directory, write_bytes_atomically, write_text_atomically

MARKER = "tweetforge-artifact.json"
DOCUMENTS = ("README.md", "tweetforge.json")
"""The files of a model version that change after registration (evaluation results); all else is immutable."""
CHUNK = 8 << 20


class ArtifactError(TweetforgeError):
    """An artifacts location that cannot be reached, or a copy that does not match what was written."""


def is_remote(location: str | Path) -> bool:
    return isinstance(location, str) and "://" in location


def _filesystem(url: str) -> tuple[Any, str]:
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as error:
        scheme = urlsplit(url).scheme
        extra = " (pip install 'tweetforge[s3]')" if scheme in ("s3", "s3a") else ""
        raise ArtifactError(f"artifacts URL {_safe(url)}: {error}{extra}") from None
    if "file" in fs.protocol:
        fs.auto_mkdir = True  # object stores have no folders; a shared disk needs them made
    return fs, root


def _safe(url: str) -> str:
    """The URL without credentials someone may have put in it."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{':' + str(parts.port) if parts.port else ''}{parts.path}"


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *parts])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def describe_files(directory: Path, skip: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Every file under directory (sorted, '/'-separated relative paths) with its size and sha256."""
    files = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = path.relative_to(directory).as_posix()
        if relative not in skip and relative != MARKER:
            files.append({"path": relative, "size": path.stat().st_size, "sha256": _sha256(path)})
    return files


def tree_hash(files: list[dict[str, Any]]) -> str:
    return hashlib.sha256("".join(f"{f['path']}\0{f['sha256']}\n" for f in files).encode()).hexdigest()


class _Transfer:
    """A Rich bar on stderr for transfers of more than a few megabytes."""

    def __init__(self, what: str, total: int) -> None:
        self.progress = None
        if total > 4 << 20:
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

            self.progress = Progress("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                                     console=Console(stderr=True), transient=True)
            self.task = self.progress.add_task(what, total=total)
            self.progress.start()

    def advance(self, size: int) -> None:
        if self.progress:
            self.progress.advance(self.task, size)

    def close(self) -> None:
        if self.progress:
            self.progress.stop()


def _read_marker(fs: Any, root: str) -> dict[str, Any] | None:
    fs.invalidate_cache(root)
    try:
        return json.loads(fs.cat_file(f"{root}/{MARKER}"))
    except FileNotFoundError:
        return None


def _write_marker(fs: Any, root: str, marker: dict[str, Any]) -> None:
    fs.pipe_file(f"{root}/{MARKER}", json.dumps(marker, indent=2).encode())


def upload_content(directory: Path, prefix_url: str, skip: tuple[str, ...] = ()) -> tuple[str, dict[str, Any]]:
    """Upload directory's files (but skip) under prefix_url/<tree hash>/, the marker last; nothing is sent
    when that directory is complete already. Returns its URL and marker."""
    files = describe_files(directory, skip)
    url = join(prefix_url, tree_hash(files))
    fs, root = _filesystem(url)
    try:
        marker = _read_marker(fs, root)
        if marker is not None and marker.get("files") == files:
            return url, marker
        transfer = _Transfer(f"uploading {_safe(url)}", sum(f["size"] for f in files))
        try:
            for f in files:
                fs.put_file(str(directory / f["path"]), f"{root}/{f['path']}")
                transfer.advance(f["size"])
        finally:
            transfer.close()
        marker = {"tweetforge_artifact": 1, "content": url, "files": files, "documents": []}
        _write_marker(fs, root, marker)
    except OSError as error:
        raise ArtifactError(f"uploading to {_safe(url)} failed: {error}") from None
    return url, marker


def publish_version(version_url: str, content: dict[str, Any], directory: Path) -> dict[str, Any]:
    """A model version's documents from directory, then its marker (naming the content directory)."""
    fs, root = _filesystem(version_url)
    marker = {"tweetforge_artifact": 1, "content": content["content"], "files": content["files"], "documents": list(DOCUMENTS)}
    try:
        for name in DOCUMENTS:
            fs.pipe_file(f"{root}/{name}", (directory / name).read_bytes())
        _write_marker(fs, root, marker)
    except OSError as error:
        raise ArtifactError(f"uploading to {_safe(version_url)} failed: {error}") from None
    return marker


def cache_root() -> Path:
    from tweetforge.config import get_settings

    return get_settings().resolved_home / "cache" / "artifacts"


def cache_directory(url: str) -> Path:
    parts = urlsplit(url)
    return cache_root() / parts.scheme / (parts.netloc.rpartition("@")[2] or "_") / parts.path.strip("/")


_documents_fresh: set[Path] = set()
"""Cached copies whose documents this process fetched already (evaluation on another machine may rewrite them)."""


def local_directory(location: str) -> Path:
    """The artifact at location as a directory on this machine: location itself when it is a path, else its
    cached copy (downloaded and checked on first use; documents refreshed once per process)."""
    if not is_remote(location):
        return Path(location)
    target = cache_directory(location)
    fs, root = _filesystem(location)
    if (target / MARKER).exists():
        if target not in _documents_fresh:
            try:
                _fetch_documents(fs, root, json.loads((target / MARKER).read_text()), target)
            except Exception:  # noqa: BLE001 - the store unreachable (any driver's error): the cached copy still serves
                pass
            _documents_fresh.add(target)
        return target
    marker = _read_marker(fs, root)
    if marker is None:
        raise ArtifactError(f"{_safe(location)} has no {MARKER}: its upload did not finish, or it was removed")
    content_fs, content_root = _filesystem(marker["content"])
    transfer = _Transfer(f"downloading {_safe(location)}", sum(f["size"] for f in marker["files"]))
    staging = staging_directory(target.parent, target.name)
    try:
        for f in marker["files"]:
            local = staging / f["path"]
            local.parent.mkdir(parents=True, exist_ok=True)
            content_fs.get_file(f"{content_root}/{f['path']}", str(local))
            if _sha256(local) != f["sha256"]:
                raise ArtifactError(f"{_safe(marker['content'])}/{f['path']} does not match its sha256 in {MARKER}")
            transfer.advance(f["size"])
        _fetch_documents(fs, root, marker, staging)
        (staging / MARKER).write_text(json.dumps(marker, indent=2))
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / MARKER).exists():  # not another process's finished copy
                raise
    except OSError as error:
        raise ArtifactError(f"downloading {_safe(location)} failed: {error}") from None
    finally:
        transfer.close()
        shutil.rmtree(staging, ignore_errors=True)
    _documents_fresh.add(target)
    return target


def keep_as_cached(directory: Path, location: str, marker: dict[str, Any]) -> None:
    """Make the directory just uploaded this machine's cached copy of location (no download after)."""
    (directory / MARKER).write_text(json.dumps(marker, indent=2))
    target = cache_directory(location)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(directory, target)
    except OSError:
        return  # a copy is there already
    _documents_fresh.add(target)


def _fetch_documents(fs: Any, root: str, marker: dict[str, Any], directory: Path) -> None:
    for name in marker.get("documents", []):
        write_bytes_atomically(directory / name, fs.cat_file(f"{root}/{name}"))


def write_document(location: str, name: str, text: str) -> None:
    """Rewrite one document of a model version: where it is stored (one object, replaced whole) and in
    this machine's copy."""
    if is_remote(location):
        fs, root = _filesystem(location)
        try:
            fs.pipe_file(f"{root}/{name}", text.encode())
        except OSError as error:
            raise ArtifactError(f"writing {_safe(location)}/{name} failed: {error}") from None
        cached = cache_directory(location)
        if (cached / MARKER).exists():
            write_text_atomically(cached / name, text)
    else:
        write_text_atomically(Path(location) / name, text)
