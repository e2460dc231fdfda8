"""CUDA_HOME resolution (jemfast/_cuda_home.py), on fake toolkit layouts in tmp folders.

The case that broke the first GPU build: ``nvcc`` is a wrapper in ``<prefix>/bin`` and
torch's guess, ``<prefix>``, has no ``include/cuda_runtime.h``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jemfast._cuda_home import resolve_cuda_home

REPO = Path(__file__).resolve().parents[1]


def _toolkit(root: Path) -> Path:
    """A fake toolkit: bin/nvcc (a binary-looking file) and include/cuda_runtime.h."""
    (root / "bin").mkdir(parents=True)
    (root / "include").mkdir()
    (root / "include" / "cuda_runtime.h").write_text("/* fake */\n")
    nvcc = root / "bin" / "nvcc"
    nvcc.write_bytes(b"\x7fELF\0fake nvcc")
    nvcc.chmod(0o755)
    return root


def _env(*path_dirs: Path, **extra: str) -> dict[str, str]:
    return {"PATH": os.pathsep.join(str(p) for p in path_dirs), **extra}


@pytest.fixture
def prefix(tmp_path) -> Path:
    """Stands for /usr/local: an empty bin/ and no cuda folders yet."""
    (tmp_path / "local" / "bin").mkdir(parents=True)
    return tmp_path / "local"


def test_cuda_home_is_taken_when_it_has_the_headers(tmp_path, prefix):
    kit = _toolkit(tmp_path / "kit")
    other = _toolkit(prefix / "cuda")
    assert resolve_cuda_home(_env(other / "bin", CUDA_HOME=str(kit)), prefix) == str(kit)
    assert resolve_cuda_home(_env(other / "bin", CUDA_PATH=str(kit)), prefix) == str(kit)


def test_cuda_home_without_headers_is_passed_over(tmp_path, prefix):
    kit = _toolkit(tmp_path / "kit")
    env = _env(kit / "bin", CUDA_HOME=str(prefix), CUDA_PATH=str(tmp_path / "missing"))
    assert resolve_cuda_home(env, prefix) == str(kit)


def test_symlinked_nvcc_resolves_to_the_real_toolkit(tmp_path, prefix):
    kit = _toolkit(tmp_path / "opt" / "cuda-12.8")
    (prefix / "bin" / "nvcc").symlink_to(kit / "bin" / "nvcc")
    assert resolve_cuda_home(_env(prefix / "bin"), prefix) == str(kit)


def test_wrapper_script_nvcc_names_the_real_toolkit(tmp_path, prefix):
    """The GPU image's layout: /usr/local/bin/nvcc is `exec /usr/local/cuda-13.0/bin/nvcc "$@"`."""
    kit = _toolkit(tmp_path / "opt" / "cuda-13.0")
    wrapper = prefix / "bin" / "nvcc"
    wrapper.write_text(f'#!/bin/sh\nexec {kit}/bin/nvcc "$@"\n')
    wrapper.chmod(0o755)
    env = _env(prefix / "bin")
    assert resolve_cuda_home(env, prefix) == str(kit)  # not the prefix torch would guess


def test_wrapper_that_names_no_toolkit_falls_back_to_prefix_cuda(prefix):
    wrapper = prefix / "bin" / "nvcc"
    wrapper.write_text('#!/bin/sh\nexec "$REAL_NVCC" "$@"\n')
    wrapper.chmod(0o755)
    env = _env(prefix / "bin")
    assert resolve_cuda_home(env, prefix) is None
    kit = _toolkit(prefix / "cuda")
    assert resolve_cuda_home(env, prefix) == str(kit)


def test_versioned_installs_newest_first(prefix):
    for version in ("cuda-12.9", "cuda-12.10", "cuda-11.8"):
        _toolkit(prefix / version)
    (prefix / "cuda-13.0").mkdir()  # no headers: skipped
    assert resolve_cuda_home(_env(), prefix) == str(prefix / "cuda-12.10")


def test_nothing_found(tmp_path, prefix):
    assert resolve_cuda_home(_env(tmp_path), prefix) is None


def test_setup_py_exports_the_resolved_cuda_home_before_torch(tmp_path):
    """setup.py sets CUDA_HOME from the resolver, overriding a value without headers."""
    kit = _toolkit(tmp_path / "kit")
    wrapper_dir = tmp_path / "bin"
    wrapper_dir.mkdir()
    (wrapper_dir / "nvcc").write_text(f'#!/bin/sh\nexec {kit}/bin/nvcc "$@"\n')
    (wrapper_dir / "nvcc").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{wrapper_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "CUDA_HOME": str(tmp_path),
        "JEMFAST_BUILD_CUDA": "",
    }
    env.pop("CUDA_PATH", None)
    code = (
        "import os, runpy, sys; sys.argv = ['setup.py', '--name'];"
        "runpy.run_path('setup.py', run_name='__main__');"
        "print('CUDA_HOME', os.environ['CUDA_HOME'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"CUDA_HOME {kit}" in result.stdout
    assert f"jemfast: CUDA_HOME={kit} (was {tmp_path}" in result.stderr


def test_script_prints_the_folder(tmp_path):
    kit = _toolkit(tmp_path / "kit")
    script = REPO / "jemfast" / "_cuda_home.py"
    ok = subprocess.run(
        [sys.executable, str(script)],
        env=_env(kit / "bin", CUDA_HOME=str(kit)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0 and ok.stdout.strip() == str(kit)
