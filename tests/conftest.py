"""Test configuration shared by the whole suite.

Without a CUDA device the Triton kernels run in Triton's interpreter on CPU
tensors; the variable must be set before triton is first imported.
"""

import os


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


@pytest.fixture
def device() -> torch.device:
    return torch.device("cuda" if HAS_CUDA else "cpu")
