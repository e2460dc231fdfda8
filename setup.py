"""Build script: pure Python everywhere, plus the CUDA extension where it can be built.

The extension (``jemfast._C``, from ``csrc/``) is built only when a CUDA
toolchain and a CUDA build of torch are both importable here. Pip's default
isolated build environment has no torch, so a plain ``pip install .`` is pure
Python; build the kernels with::

    JEMFAST_BUILD_CUDA=1 pip install --no-build-isolation -e .

``JEMFAST_BUILD_CUDA=1`` forces the build (and fails loudly if it cannot),
``JEMFAST_BUILD_CUDA=0`` skips it, unset means "build if possible".
``TORCH_CUDA_ARCH_LIST`` picks the architectures (default: 9.0, Hopper).
``CUDA_HOME`` is resolved by ``jemfast/_cuda_home.py`` (the same resolver the GPU
suite and the tests use) before torch is imported: torch's own guess from
``nvcc``'s folder is wrong where ``nvcc`` is a wrapper in ``/usr/local/bin``.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys

from setuptools import setup


def _want_cuda() -> bool | None:
    flag = os.environ.get("JEMFAST_BUILD_CUDA", "").strip()
    if flag in ("", "auto"):
        return None
    if flag in ("0", "1"):
        return flag == "1"
    raise SystemExit(f"JEMFAST_BUILD_CUDA must be 0, 1 or unset, got {flag!r}")


def _resolve_cuda_home() -> None:
    """Sets ``CUDA_HOME`` to the toolkit jemfast/_cuda_home.py finds; torch reads it at import."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jemfast", "_cuda_home.py")
    spec = importlib.util.spec_from_file_location("_jemfast_cuda_home", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # standard library only: no import of the jemfast package
    home = module.resolve_cuda_home()
    if home is None:
        return  # torch reports the missing toolkit below
    if os.environ.get("CUDA_HOME") != home:
        was = os.environ.get("CUDA_HOME")
        note = f" (was {was}: no include/cuda_runtime.h there)" if was else ""
        print(f"jemfast: CUDA_HOME={home}{note}", file=sys.stderr)
    os.environ["CUDA_HOME"] = home


def _cuda_extension():
    want = _want_cuda()
    if want is False:
        return [], {}
    _resolve_cuda_home()
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension
    except ImportError as exc:
        if want:
            raise SystemExit(
                "JEMFAST_BUILD_CUDA=1 but torch is not importable in the build environment; "
                "install torch first and use `pip install --no-build-isolation`"
            ) from exc
        return [], {}
    reason = None
    if torch.version.cuda is None:
        reason = f"torch {torch.__version__} is a CPU-only build"
    elif CUDA_HOME is None:
        reason = "no CUDA toolkit found (set CUDA_HOME or put nvcc on PATH)"
    if reason:
        if want:
            raise SystemExit(f"JEMFAST_BUILD_CUDA=1 but the CUDA extension cannot be built: {reason}")
        print(f"jemfast: skipping the CUDA extension ({reason})", file=sys.stderr)
        return [], {}
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")
    here = os.path.dirname(os.path.abspath(__file__))
    sources = sorted(glob.glob(os.path.join("csrc", "*.cu")) + glob.glob(os.path.join("csrc", "*.cpp")))
    ext = CUDAExtension(
        name="jemfast._C",
        sources=sources,
        include_dirs=[os.path.join(here, "csrc")],
        extra_compile_args={
            # No -std flag: BuildExtension picks the C++ standard the installed
            # torch headers need (C++17 or C++20 depending on the release).
            "cxx": ["-O3"],
            # No --use_fast_math: the noise must match Triton's randn to 1e-6,
            # which needs the accurate logf/cosf.
            "nvcc": ["-O3", "--expt-relaxed-constexpr", "-lineinfo"],
        },
    )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _cuda_extension()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
