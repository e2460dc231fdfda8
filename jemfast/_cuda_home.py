"""Where the CUDA toolkit is: one answer for setup.py, the GPU suite and the tests.

torch guesses ``CUDA_HOME`` from ``nvcc``'s location (``<nvcc's folder>/..``); where
``nvcc`` is a wrapper in ``/usr/local/bin`` that guess is ``/usr/local`` and the
extension build fails on ``cuda_runtime.h``. :func:`resolve_cuda_home` takes the
first of these folders that holds ``include/cuda_runtime.h``:

1. ``$CUDA_HOME``, then ``$CUDA_PATH``;
2. the real path of ``nvcc`` (symlinks resolved), two levels up;
3. when ``nvcc`` is a small wrapper script, the ``.../bin/nvcc`` it names, two levels up;
4. ``/usr/local/cuda``;
5. ``/usr/local/cuda-*``, newest version first.

This module imports nothing beyond the standard library (setup.py loads it by
file path, before torch is imported, since torch reads ``CUDA_HOME`` at import).
Run as a script it prints the folder (exit status 1 when there is none)::

    python jemfast/_cuda_home.py            # /usr/local/cuda-13.0
    python jemfast/_cuda_home.py --explain  # every candidate and why it was taken or not
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

HEADER = Path("include") / "cuda_runtime.h"
_WRAPPER_MAX_BYTES = 64 * 1024  # a wrapper script is small; the real nvcc is a large binary
_NVCC_IN_SCRIPT = re.compile(r"""(/[^\s'"`;|&<>]*/bin/nvcc)(?![\w.-])""")


def _version_key(path: Path) -> tuple:
    """``cuda-12.10`` sorts after ``cuda-12.9``; names without a version come last."""
    parts = re.findall(r"\d+", path.name)
    return (1, tuple(int(p) for p in parts)) if parts else (0, ())


def _wrapped_nvcc(script: Path) -> list[Path]:
    """Absolute ``.../bin/nvcc`` paths named by a small text script (a wrapper)."""
    try:
        if script.stat().st_size > _WRAPPER_MAX_BYTES:
            return []
        data = script.read_bytes()
    except OSError:
        return []
    if b"\0" in data:  # a binary, not a script
        return []
    return [Path(m) for m in _NVCC_IN_SCRIPT.findall(data.decode("utf-8", "replace"))]


def candidates(
    environ: Mapping[str, str] | None = None, search_root: str | os.PathLike = "/usr/local"
) -> Iterator[tuple[Path, str]]:
    """Every folder worth checking, in order of preference, with where it came from."""
    env = os.environ if environ is None else environ
    for name in ("CUDA_HOME", "CUDA_PATH"):
        if env.get(name):
            yield Path(env[name]), f"${name}"
    nvcc = shutil.which("nvcc", path=env.get("PATH", os.defpath))
    if nvcc is not None:
        real = Path(os.path.realpath(nvcc))
        yield real.parent.parent, f"nvcc at {nvcc}" + (f" (-> {real})" if str(real) != nvcc else "")
        for target in _wrapped_nvcc(real):
            yield Path(os.path.realpath(target)).parent.parent, f"the nvcc that the wrapper {real} runs ({target})"
    root = Path(search_root)
    yield root / "cuda", "the default location"
    for path in sorted(root.glob("cuda-*"), key=_version_key, reverse=True):
        yield path, "a versioned install"


def resolve_cuda_home(
    environ: Mapping[str, str] | None = None, search_root: str | os.PathLike = "/usr/local"
) -> str | None:
    """The CUDA toolkit folder (one holding ``include/cuda_runtime.h``), or None."""
    for path, _source in candidates(environ, search_root):
        if (path / HEADER).is_file():
            return str(path)
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    found = None
    for path, source in candidates():
        ok = (path / HEADER).is_file()
        if "--explain" in argv:
            print(f"{'yes' if ok else 'no ':3s} {path}  ({source})", file=sys.stderr)
        if ok and found is None:
            found = str(path)
    if found is None:
        print("no CUDA toolkit found (no include/cuda_runtime.h); set CUDA_HOME", file=sys.stderr)
        return 1
    print(found)
    return 0


if __name__ == "__main__":
    sys.exit(main())
