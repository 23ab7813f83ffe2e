"""Writing so that a reader sees the old file or directory or the new one, never half of either."""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def staging_directory(parent: Path, name: str) -> Path:
    """A new hidden directory in parent to build `name` in. It carries this host and process id, so that the
    next one made in parent sweeps away what a killed process left (kill -9 runs no cleanup)."""
    parent.mkdir(parents=True, exist_ok=True)
    _sweep_staging(parent)
    staging = parent / f".tmp-{name}@{socket.gethostname()}@{os.getpid()}@{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    return staging


def _sweep_staging(parent: Path) -> None:
    host = socket.gethostname()
    for entry in parent.glob(".tmp-*@*@*@*"):
        _, their_host, pid, _ = entry.name.rsplit("@", 3)
        if their_host == host and pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def process_alive(pid: int) -> bool:
    """Whether a process of this host runs under pid (one of another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def discard_directory(path: Path) -> None:
    """Remove a directory so that a crash half-way never leaves part of it under its name."""
    doomed = path.with_name(f".tmp-discarded-{path.name}@{socket.gethostname()}@{os.getpid()}@{uuid.uuid4().hex[:8]}")
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def replace_directory(staging: Path, target: Path) -> None:
    """Rename a finished staging directory onto target, discarding whatever stood there."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        discard_directory(target)
    os.replace(staging, target)


@contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """A staging directory beside target, renamed onto it (replacing any old one) when the block succeeds;
    removed when it fails."""
    staging = staging_directory(target.parent, target.name)
    try:
        yield staging
        replace_directory(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_bytes_atomically(path: Path, data: bytes) -> None:
    staging = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    staging.write_bytes(data)
    os.replace(staging, path)


def write_text_atomically(path: Path, text: str) -> None:
    write_bytes_atomically(path, text.encode())
