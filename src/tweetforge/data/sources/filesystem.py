"""Opening only regular files. A FIFO, a device or a socket (named as the source, or found inside an archive
folder) is refused from its stat before it is opened, so that nothing blocks or reads forever; the file
is then opened without blocking and checked again, so that nothing swapped in meanwhile is read either."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from tweetforge.data.sources.errors import SourceError

_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def kind_of(mode: int) -> str:
    return next((name for is_kind, name in _KINDS if is_kind(mode)), "not a regular file")


def os_reason(exc: OSError) -> str:
    """'permission denied' rather than "[Errno 13] Permission denied: '/the/path'" (the path is named already)."""
    return (exc.strerror or str(exc)).lower()


def stat_path(path: Path, where: str, follow_symlinks: bool = True) -> os.stat_result:
    try:
        return os.stat(path, follow_symlinks=follow_symlinks)
    except FileNotFoundError:
        raise SourceError(where, "no such file or directory") from None
    except OSError as exc:
        raise SourceError(where, os_reason(exc)) from None


def refuse_unless_regular(mode: int, where: str, inside: str = "") -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISLNK(mode):
        raise SourceError(where, f"is a symbolic link: tweetforge reads only regular files inside {inside or 'an archive'}")
    raise SourceError(where, f"is {kind_of(mode)}, not a regular file: tweetforge reads files and folders only")


_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def open_regular(path: Path, where: str, follow_symlinks: bool = True, inside: str = "") -> BinaryIO:
    """The file opened for reading, if it is a regular file (and, unless follow_symlinks, not a symbolic link)."""
    refuse_unless_regular(stat_path(path, where, follow_symlinks).st_mode, where, inside)
    flags = _OPEN_FLAGS | (0 if follow_symlinks else getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            refuse_unless_regular(stat.S_IFLNK, where, inside)
        raise SourceError(where, os_reason(exc)) from None
    try:
        refuse_unless_regular(os.fstat(fd).st_mode, where, inside)
    except SourceError:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")
