"""The package surface: lazy public names, and nothing heavy or CUDA-touching at import."""

import subprocess
import sys

import pytest

import jemfast


@pytest.mark.parametrize("name", sorted(jemfast._EXPORTS))
def test_every_public_name_resolves(name):
    assert getattr(jemfast, name) is not None


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute"):
        jemfast.does_not_exist  # noqa: B018


def test_cpu_use_loads_no_gpu_backend_and_does_not_initialise_cuda():
    """Using the ops on CPU loads neither GPU backend nor initialises CUDA (decisions are made lazily).

    (torch itself may import the triton package when a custom op is first called; that is not ours.)
    """
    code = (
        "import sys, torch, jemfast, jemfast.ops as ops\n"
        "s = ops.make_rng_state(0)\n"
        "x = torch.zeros(10)\n"
        "ops.sgld_update_(x, torch.zeros(10), step_size=0.1, noise_std=1.0, rng_state=s)\n"
        "ops.energy(torch.randn(3, 4))\n"
        "assert 'jemfast.backends.triton_kernels' not in sys.modules, 'Triton kernels were loaded'\n"
        "assert 'jemfast.backends.cuda_ext' not in sys.modules, 'the CUDA extension loader ran'\n"
        "assert not torch.cuda.is_initialized(), 'CUDA was initialised'\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
