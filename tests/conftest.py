"""Test configuration shared by the whole suite.

Without a CUDA device the Triton kernels run in Triton's interpreter on CPU
tensors; the variable must be set before triton is first imported.

The ``gpu`` marker (declared in pyproject.toml) is what the GPU suite selects
(``pytest -m gpu``); it is added here at collection, so no test has to repeat it:

* to every test with a ``skipif`` whose reason says it needs a CUDA device or a
  GPU (``requires_cuda`` does; so does "needs two CUDA devices");
* to the parameter sets of a parametrised test that take a CUDA device (a
  ``torch.device("cuda")``, or ``"cuda"``/``"cuda:N"`` for a parameter whose
  name says device); its CPU parameter sets stay unmarked. A ``"cuda"`` *backend*
  parameter is marked where it is declared (``pytest.param("cuda", marks=pytest.mark.gpu)``):
  the backend registry's own tests take that name on CPU too.

Tests that run on whichever device is there (the ``device`` fixture, or a module's
``_device()`` helper, as in the op tests) are marked only where a CUDA device is
present: there they are the kernels' GPU checks (Triton and the extension against the
reference on CUDA tensors), and the device suite must run them; on CPU they are CPU
tests.
"""

import os
import re


def _cuda_visible() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch missing is reported by the imports
        return False


if not _cuda_visible():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def _patch_triton_interpreter_index() -> None:
    """Triton <= 3.6's interpreter turns a scalar into an int with ``int(array_of_shape_1)``,
    which NumPy >= 2.4 refuses (a runtime loop bound then fails); fixed upstream in
    triton-lang/triton#9172 (Triton 3.9 squeezes first)."""
    try:
        from triton.runtime import interpreter
    except Exception:  # pragma: no cover - no triton
        return
    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None:
        return

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    interpreter._patch_lang_tensor = patched


if os.environ.get("TRITON_INTERPRET") == "1":
    _patch_triton_interpreter_index()

import pytest  # noqa: E402
import torch  # noqa: E402

HAS_CUDA = torch.cuda.is_available()

requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")


# "needs a CUDA device", "needs two CUDA devices", "needs a GPU"; not "needs the CUDA toolkit"
_NEEDS_GPU = re.compile(r"\bneeds?\b.*\b(CUDA devices?|GPUs?)\b", re.IGNORECASE)


def _needs_gpu(item: pytest.Item) -> bool:
    if HAS_CUDA and (
        "device" in getattr(item, "fixturenames", ()) or hasattr(getattr(item, "module", None), "_device")
    ):
        return True  # device-agnostic: on this machine it runs on the GPU
    for mark in item.iter_markers("skipif"):
        reason = mark.kwargs.get("reason") or (mark.args[1] if len(mark.args) > 1 else "")
        if isinstance(reason, str) and _NEEDS_GPU.search(reason):
            return True
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        for name, value in callspec.params.items():
            if isinstance(value, torch.device) and value.type == "cuda":
                return True
            if "device" in name and isinstance(value, str) and re.fullmatch(r"cuda(:\d+)?", value):
                return True
    return False


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("gpu") is None and _needs_gpu(item):
            item.add_marker(pytest.mark.gpu)


@pytest.fixture
def device() -> torch.device:
    return torch.device("cuda" if HAS_CUDA else "cpu")
