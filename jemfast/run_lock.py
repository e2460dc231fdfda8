"""One writer per run directory: an exclusive lock held while a run trains.

``jemfast train`` (and ``--resume``) holds :func:`run_lock` on its run directory
from start to finish, so a second ``train`` into the same ``--run-dir``, or a
``--resume`` of a run that is still training, stops at once with an error
naming the process that holds the run, instead of interleaving metrics.jsonl
and checkpoints with it.

The lock is ``fcntl.flock`` on the file :data:`LOCK_NAME` in the run directory.
The operating system drops a flock when its holder dies, however it dies
(``kill -9`` included), so a lock left by a killed process is recovered by the
next taker without any clean-up. The holder's pid, host and start time are
written into the file only for the error message; they play no part in the
locking. The file is removed on release, so a finished run leaves none behind.

``jemfast evaluate`` and ``calibrate`` do not take the lock: they only read a
run's config.yaml and checkpoints, which training replaces atomically (a
reader sees the old file or the new one), and they write predictions/,
metrics.json and calibrators/, which training never touches. Evaluating the
best checkpoint of a run that is still training is a legitimate use.

flock is reliable on local filesystems; on network filesystems (NFS, some
cluster storage) it may be local to each host, so two hosts could both take it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jemfast.recipes import ConfigError

__all__ = ["LOCK_NAME", "RunDirectoryBusy", "run_lock", "lock_holder"]

logger = logging.getLogger(__name__)

LOCK_NAME = ".jemfast.lock"


class RunDirectoryBusy(ConfigError):
    """Another process holds the lock of the run directory (a user error: exit status 1)."""


def lock_holder(run_dir: str | os.PathLike) -> dict[str, Any]:
    """What the lock file of ``run_dir`` says about its holder: ``{"pid", "host", "since"}``.

    Missing or unreadable fields are left out (the holder may not have written them yet).
    """
    try:
        text = (Path(run_dir) / LOCK_NAME).read_text(encoding="utf-8")
        record = json.loads(text)
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    if holder.get("pid") is None:
        return "another process"
    host = f" on host {holder['host']}" if holder.get("host") else ""
    since = f" (since {holder['since']})" if holder.get("since") else ""
    return f"process {holder['pid']}{host}{since}"


def _busy_error(run_dir: Path) -> RunDirectoryBusy:
    holder = lock_holder(run_dir)
    stop = f"stop it (kill {holder['pid']})" if holder.get("pid") else "stop it"
    return RunDirectoryBusy(
        f"run directory {run_dir} is being trained by {_describe(holder)}; "
        f"wait for it to finish or {stop} before training into it again"
    )


def _try_lock(path: Path) -> int | None:
    """An open descriptor of ``path`` holding its flock, or None when another process holds it.

    The lock is only good if the file locked is still the one at ``path``: a releasing
    holder unlinks it, and a taker that opened it just before would otherwise lock a
    file nobody else can see.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        opened = os.fstat(fd)
        if current is not None and (current.st_ino, current.st_dev) == (opened.st_ino, opened.st_dev):
            return fd
        os.close(fd)  # unlinked by its last holder meanwhile: lock the new file instead


def _record_holder(fd: int) -> None:
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime()),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold the exclusive lock of ``run_dir`` for the ``with`` block; yields the run directory.

    Creates the directory when it is missing (and removes it again on exit when
    nothing but the lock was ever written into it, so a run refused before it
    started leaves no trace). A lock left by a process that died is taken over.

    Raises:
        RunDirectoryBusy: another live process holds the lock; the message names
            its pid and host.
        ConfigError: ``run_dir`` exists but is not a directory.
    """
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"run directory {run_dir} is a file, not a directory; pass another --run-dir") from None
    path = run_dir / LOCK_NAME
    fd = _try_lock(path)
    if fd is None:
        raise _busy_error(run_dir)
    try:
        _record_holder(fd)
        logger.debug("locked %s", run_dir)
        yield run_dir
    finally:
        # Unlink while still holding the lock, so no other process can hold it on this file.
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):  # not empty: the run wrote something, keep it
                run_dir.rmdir()
