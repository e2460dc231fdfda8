"""Recognise files and folders left behind by a writer that was killed mid-write.

Writers that stage their output next to the destination (the feature cache's
``.<key>.partial-<owner>`` folders, the checkpoints' ``.<name>.<owner>.<random>.tmp``
files) put an *owner tag* ``<host>-<pid>`` in the name. A leftover is stale,
and safe to delete, when either

* it was written on this host and no process with its pid is alive: the writer
  is gone, so nothing will ever finish or rename it; or
* nothing in it was modified for :data:`STALE_AFTER_S` seconds: a live writer
  touches its staging file or folder continuously (every utterance, every
  buffered write), so an hour of silence means its writer is gone too.

The age rule covers what the pid rule cannot see: a pid reused by an unrelated
process, a writer on another host sharing the folder (its pid means nothing
here), and names without an owner tag written by older versions. The host is
part of the tag so that one host never deletes another host's live staging
area on a shared file system.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from pathlib import Path

logger = logging.getLogger(__name__)

# A writer that has not touched its staging output for an hour is gone: see the module docstring.
STALE_AFTER_S = 3600.0

_OWNER_PATTERN = re.compile(r"(?:(?P<host>[A-Za-z0-9_-]+)-)?(?P<pid>\d+)")


def host_tag() -> str:
    """This host's name reduced to ``[A-Za-z0-9_-]`` so that it can sit inside a file name."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "localhost"


def owner_tag() -> str:
    """``<host>-<pid>`` of this process, for the names of staging files and folders."""
    return f"{host_tag()}-{os.getpid()}"


def parse_owner_tag(text: str) -> tuple[str | None, int] | None:
    """``(host, pid)`` of an owner tag; ``host`` is None for a bare ``<pid>`` (older names).

    Returns None when ``text`` is not an owner tag.
    """
    match = _OWNER_PATTERN.fullmatch(text)
    if match is None:
        return None
    return match.group("host"), int(match.group("pid"))


def process_alive(pid: int) -> bool | None:
    """Whether a process with ``pid`` exists on this host; None when that cannot be told."""
    if os.name == "nt":
        # os.kill on Windows terminates the process for any signal but CTRL_C/CTRL_BREAK: never probe.
        return None
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists but belongs to another user
        return True
    except OSError:
        return None
    return True


def newest_mtime(path: Path) -> float:
    """Latest modification time (s) of ``path`` and, for a folder, of the entries directly in it."""
    times = [path.stat().st_mtime]
    if path.is_dir():
        for child in path.iterdir():
            try:
                times.append(child.stat().st_mtime)
            except FileNotFoundError:  # removed while we looked
                continue
    return max(times)


def is_stale(path: Path, owner: tuple[str | None, int] | None, now: float | None = None) -> bool:
    """Whether the leftover ``path`` (written by ``owner``, see :func:`parse_owner_tag`) can be deleted.

    A bare pid (no host, older names) is taken as this host's: those names were
    only ever written by single-host versions.
    """
    if owner is not None:
        host, pid = owner
        local = host is None or host == host_tag()
        if local and pid != os.getpid() and process_alive(pid) is False:
            return True
    try:
        age = (time.time() if now is None else now) - newest_mtime(path)
    except FileNotFoundError:  # already removed by someone else
        return False
    return age > STALE_AFTER_S


def stale_leftovers(directory: str | os.PathLike, pattern: re.Pattern[str], folders: bool) -> list[Path]:
    """Entries of ``directory`` whose names match ``pattern`` (with an optional ``owner`` group
    holding an owner tag) and that :func:`is_stale` says may be deleted.

    ``folders`` picks folders (True) or files (False); the caller deletes what it gets.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = []
    for path in directory.iterdir():
        match = pattern.fullmatch(path.name)
        if match is None or path.is_dir() != folders:
            continue
        tag = match.groupdict().get("owner")
        if is_stale(path, parse_owner_tag(tag) if tag else None):
            stale.append(path)
    return stale
