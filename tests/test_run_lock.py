"""The exclusive lock on a run directory: one holder, a clear message, recovery after a crash."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jemfast.recipes import ConfigError
from jemfast.run_lock import LOCK_NAME, RunDirectoryBusy, lock_holder, run_lock

HOLDER = textwrap.dedent("""
    import sys, time
    from jemfast.run_lock import run_lock
    with run_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(120)
""")


def hold_in_another_process(run_dir: Path) -> subprocess.Popen:
    """A child process that holds the lock of ``run_dir`` until it is killed."""
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "locked"
    return child


def test_a_second_holder_is_refused_with_the_pid_and_host_of_the_first(tmp_path):
    run_dir = tmp_path / "run"
    child = hold_in_another_process(run_dir)
    try:
        with pytest.raises(RunDirectoryBusy) as caught:
            with run_lock(run_dir):
                pass
        message = str(caught.value)
        assert f"process {child.pid} on host {socket.gethostname()}" in message
        assert str(run_dir) in message and "\n" not in message
        assert isinstance(caught.value, ConfigError)  # the command line prints it as one line
        assert lock_holder(run_dir)["pid"] == child.pid
    finally:
        child.kill()
        child.wait()


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    run_dir = tmp_path / "run"
    child = hold_in_another_process(run_dir)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert lock_holder(run_dir)["pid"] == child.pid  # the file still names the dead process
    with run_lock(run_dir):
        assert lock_holder(run_dir)["pid"] == os.getpid()
    assert not (run_dir / LOCK_NAME).exists()


def test_a_stale_lock_file_from_another_host_is_taken_over(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / LOCK_NAME).write_text(json.dumps({"pid": 999999999, "host": "elsewhere"}))
    with run_lock(run_dir):
        assert lock_holder(run_dir)["host"] == socket.gethostname()


def test_the_lock_is_exclusive_within_one_process_too(tmp_path):
    with run_lock(tmp_path):
        with pytest.raises(RunDirectoryBusy, match=f"process {os.getpid()}"):
            with run_lock(tmp_path):
                pass
    with run_lock(tmp_path):  # released
        pass


def test_release_removes_the_lock_file_and_a_directory_left_empty(tmp_path):
    fresh = tmp_path / "runs" / "fresh"
    with run_lock(fresh):
        assert (fresh / LOCK_NAME).is_file()
    assert not fresh.exists()  # created for the lock only: nothing to keep
    used = tmp_path / "used"
    with run_lock(used):
        (used / "config.yaml").write_text("x")
    assert [p.name for p in used.iterdir()] == ["config.yaml"]
    existing = tmp_path / "existing"
    existing.mkdir()
    with run_lock(existing):
        pass
    assert existing.is_dir()  # the caller's folder is kept even when empty


def test_a_file_in_place_of_the_run_directory_is_a_user_error(tmp_path):
    (tmp_path / "run").write_text("not a run")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        with run_lock(tmp_path / "run"):
            pass


def test_the_lock_is_released_when_the_block_raises(tmp_path):
    with pytest.raises(KeyError):
        with run_lock(tmp_path):
            raise KeyError("boom")
    with run_lock(tmp_path):
        pass


def test_many_processes_racing_for_one_lock_never_hold_it_together(tmp_path):
    # Each child tries once and, holding the lock, checks that no other holder's marker exists.
    script = textwrap.dedent("""
        import os, sys, time
        from pathlib import Path
        from jemfast.run_lock import RunDirectoryBusy, run_lock
        run_dir = Path(sys.argv[1])
        deadline = time.time() + 20
        held = 0
        while held < 5 and time.time() < deadline:
            try:
                with run_lock(run_dir):
                    marker = run_dir / "holder"
                    if marker.exists():
                        sys.exit("two holders at once")
                    marker.write_text(str(os.getpid()))
                    time.sleep(0.005)
                    marker.unlink()
                    held += 1
            except RunDirectoryBusy:
                time.sleep(0.001)
        sys.exit(0 if held == 5 else f"held the lock {held} times")
    """)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    children = [
        subprocess.Popen([sys.executable, "-c", script, str(run_dir)], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    errors = [child.communicate(timeout=120)[1] for child in children]
    assert [child.returncode for child in children] == [0] * 4, errors
