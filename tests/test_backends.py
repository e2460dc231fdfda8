"""The backend registry (jemfast.backends): one interface, one chooser, one set of Philox constants.

Each op's numbers are tested in tests/test_ops_<op>.py; here: every backend module
exports the launchers the registry says it does, with the shared signature; the
fallbacks and the table in the registry's docstring agree with the registry; and the
noise spec's constants in csrc/philox.cuh are torch_ref's.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import jemfast.backends as backends
from jemfast.backends import (
    AUTO_ORDER,
    AUTO_ORDER_CPU,
    BACKENDS,
    OPS,
    REGISTRY,
    BackendUnavailableError,
    Launchers,
    launcher,
    resolve_backend,
    torch_ref,
)

REPO = Path(__file__).resolve().parents[1]

# What each backend module needs to import at all (the registry itself needs none of them).
_MODULE_NEEDS = {"cpu": "numba", "triton": "triton"}


def _import_backend(name: str):
    needs = _MODULE_NEEDS.get(name)
    if needs is not None and importlib.util.find_spec(needs) is None:
        pytest.skip(f"{needs} is not installed")
    return importlib.import_module(REGISTRY[name].module)


@pytest.mark.parametrize("name", BACKENDS)
def test_module_provides_what_the_registry_says(name):
    module = _import_backend(name)
    assert module.PROVIDES == REGISTRY[name].provides
    for op in OPS:
        # A backend that lacks an op simply does not define it.
        assert hasattr(module, op) == (op in module.PROVIDES), (name, op)


@pytest.mark.parametrize("name", BACKENDS)
def test_launchers_share_one_signature(name):
    module = _import_backend(name)
    for op in sorted(module.PROVIDES):
        expected = [p for p in inspect.signature(getattr(Launchers, op)).parameters if p != "self"]
        assert list(inspect.signature(getattr(module, op)).parameters) == expected, (name, op)
        assert launcher(op, name) is getattr(module, op)


def test_registry_table_is_consistent():
    assert set(BACKENDS) == {"torch", "cpu", "triton", "cuda"}
    assert REGISTRY["torch"].provides == frozenset(OPS)  # the reference defines every op
    for info in REGISTRY.values():
        # forward and backward go together (autograd calls the forward's backend)
        assert ("energy_forward" in info.provides) == ("energy_backward" in info.provides), info.name
        assert set(info.fallback) <= set(BACKENDS) and info.name not in info.fallback
        missing = frozenset(OPS) - info.provides
        assert not missing or info.fallback, f"{info.name} lacks {missing} but has no fallback"
    assert set(AUTO_ORDER) <= set(BACKENDS) and set(AUTO_ORDER_CPU) <= set(BACKENDS)
    assert AUTO_ORDER[-1] == AUTO_ORDER_CPU[-1] == "torch"


def test_docstring_table_matches_the_registry():
    """The op x backend table in jemfast.backends' docstring says what the registry does."""
    rows = {}
    for line in backends.__doc__.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells[0] in OPS:
            rows[cells[0]] = cells
    assert set(rows) == set(OPS)
    for op, cells in rows.items():
        for name, cell in zip(BACKENDS, cells[1 : 1 + len(BACKENDS)], strict=True):
            info = REGISTRY[name]
            if op in info.provides:
                assert cell == "yes", (op, name, cell)
            else:
                chain = [b for b in info.fallback if op in REGISTRY[b].provides]
                assert cell == "-> " + ", ".join(chain), (op, name, cell)
        assert (REPO / cells[-1]).is_file(), cells[-1]  # the op's tests
        assert not cells[-2].endswith(".py") or (REPO / cells[-2]).is_file(), cells[-2]  # its wrapper


def test_fallback_for_an_op_a_backend_lacks(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv("JEMFAST_BACKEND", raising=False)
    if importlib.util.find_spec("numba") is not None:
        assert resolve_backend("cpu", cpu) == "cpu"
        assert resolve_backend("cpu", cpu, op="sgld_update_") == "cpu"
        assert resolve_backend("cpu", cpu, op="energy_forward") == "torch"
        assert resolve_backend(None, cpu, op="energy_backward") == "torch"
    # "cuda" lacks random_: Triton where it can run, else the reference. (Only the
    # chain is exercised here; a CPU tensor stands in for a device Triton may serve.)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    expected = "triton" if importlib.util.find_spec("triton") is not None else "torch"
    assert backends._provider("random_", "cuda", cpu) == expected
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert backends._provider("random_", "cuda", cpu) == "torch"
    assert backends._provider("random_", "cuda", torch.device("meta")) == "torch"


def test_errors_name_the_problem():
    cpu = torch.device("cpu")
    with pytest.raises(ValueError, match="unknown op 'fill'"):
        resolve_backend("torch", cpu, op="fill")
    with pytest.raises(ValueError, match="not a backend"):
        resolve_backend("vulkan", cpu, op="random_")
    with pytest.raises(BackendUnavailableError, match="CUDA tensors"):
        resolve_backend("cuda", cpu, op="random_")
    with pytest.raises(ValueError, match="unknown backend 'vulkan'"):
        backends.unavailable_reason("vulkan", cpu)
    with pytest.raises(ValueError, match="unknown backend 'vulkan'"):
        launcher("random_", "vulkan")
    with pytest.raises(ValueError, match=r"'cuda' does not implement random_.*\('triton', 'torch'\)"):
        launcher("random_", "cuda")
    with pytest.raises(ValueError, match="'cpu' does not implement energy_forward"):
        launcher("energy_forward", "cpu")


@pytest.mark.parametrize("name", ["torch", "triton"])
def test_energy_launchers_return_the_documented_dtypes(name):
    device = torch.device("cpu")
    if backends.unavailable_reason(name, device) is not None:
        pytest.skip(backends.unavailable_reason(name, device))
    logits = torch.randn(5, 7).to(torch.bfloat16)
    e = launcher("energy_forward", name)(logits, 1.5)
    assert e.dtype == torch.float32 and e.shape == (5,)
    grad = launcher("energy_backward", name)(torch.ones(5), logits, e, 1.5)
    assert grad.dtype == torch.bfloat16 and grad.shape == (5, 7)


# csrc/philox.cuh constant -> torch_ref attribute
_CUH_CONSTANTS = {
    "kPhiloxRoundA": "PHILOX_ROUND_A",
    "kPhiloxRoundB": "PHILOX_ROUND_B",
    "kPhiloxKeyA": "PHILOX_KEY_A",
    "kPhiloxKeyB": "PHILOX_KEY_B",
    "kPhiloxRounds": "PHILOX_ROUNDS",
    "kUniformScale": "UNIFORM_SCALE",
    "kBoxMullerMinU": "BOX_MULLER_U_MIN",
    "kTwoPi": "TWO_PI",
}


def test_cuda_philox_constants_are_torch_refs():
    """The C++ copy of the noise spec (csrc/philox.cuh) uses torch_ref's constants."""
    source = (REPO / "csrc" / "philox.cuh").read_text()
    found = dict(re.findall(r"constexpr\s+\w+\s+(k\w+)\s*=\s*([^;]+);", source))
    assert set(found) == set(_CUH_CONSTANTS), "a constant was added to or removed from philox.cuh"
    for cpp_name, py_name in _CUH_CONSTANTS.items():
        literal = found[cpp_name].strip()
        expected = getattr(torch_ref, py_name)
        if isinstance(expected, int):
            assert int(literal.rstrip("uU"), 0) == expected, (cpp_name, literal)
        else:
            # float literals (suffix f): equal as the float32 the kernels compute with
            assert literal.endswith("f"), (cpp_name, literal)
            assert np.float32(float(literal[:-1])) == np.float32(expected), (cpp_name, literal)


def test_cpu_kernels_take_their_constants_from_torch_ref():
    pytest.importorskip("numba")
    from jemfast.backends import cpu_kernels

    assert int(cpu_kernels._A) == torch_ref.PHILOX_ROUND_A and int(cpu_kernels._B) == torch_ref.PHILOX_ROUND_B
    assert int(cpu_kernels._KEY_A) == torch_ref.PHILOX_KEY_A and int(cpu_kernels._KEY_B) == torch_ref.PHILOX_KEY_B
    assert cpu_kernels._ROUNDS == torch_ref.PHILOX_ROUNDS
    assert cpu_kernels._SCALE == np.float32(torch_ref.UNIFORM_SCALE)
    assert cpu_kernels._U_MIN == np.float32(torch_ref.BOX_MULLER_U_MIN)
