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


# The core install: torch, numpy and pyyaml only. A meta-path finder makes every
# optional dependency unimportable, as on a machine with `pip install jemfast` alone.
_WITHOUT_EXTRAS = """
import importlib.abc, sys
OPTIONAL = {"librosa", "soundfile", "matplotlib", "numba", "tqdm", "nvtx", "triton", "scipy"}
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in OPTIONAL:
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None
sys.meta_path.insert(0, Missing())
import importlib.util
_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, package=None: (
    None if name.split(".")[0] in OPTIONAL else _find_spec(name, package))
"""


def test_the_core_install_trains_and_evaluates_without_any_extra():
    code = _WITHOUT_EXTRAS + (
        "import torch\n"
        "from torch import nn\n"
        "from jemfast import DefaultSampler, JEMTrainer, evaluate_logits\n"
        "from jemfast.ops import make_rng_state, sgld_update_\n"
        "x = torch.zeros(10)\n"
        "sgld_update_(x, torch.ones(10), step_size=0.1, noise_std=1.0, rng_state=make_rng_state(0))\n"
        "torch.manual_seed(0)\n"
        "model = nn.Sequential(nn.Linear(2, 16), nn.SiLU(), nn.Linear(16, 3))\n"
        "trainer = JEMTrainer(model, torch.optim.SGD(model.parameters(), lr=0.1),\n"
        "                     sampler=DefaultSampler(buffer_size=32, options={'n_steps': 2}), progress=True)\n"
        "xb, yb = torch.randn(16, 2), torch.randint(0, 3, (16,))\n"
        "trainer.step(xb, yb)\n"
        "print(trainer.evaluate([(xb, yb)]))\n"
        "import jemfast.calibration as cal\n"
        "try:\n"
        "    cal.reliability_diagram\n"
        "except ImportError as err:\n"
        "    assert 'jemfast[plots]' in str(err), err\n"
        "else:\n"
        "    raise AssertionError('plots imported without matplotlib')\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "val_acc" in result.stdout or "acc" in result.stdout


def test_the_readme_library_example_runs(tmp_path, monkeypatch):
    """The README's "Using the library" snippet, on CPU with a small model, warns of nothing."""
    import re
    import warnings
    from pathlib import Path

    import torch

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Using the library") :]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "JEMTrainer(" in snippet and "JEMLoss(" in snippet
    snippet = (
        snippet.replace("wrn28_5(num_classes=10).cuda()", "WideResNet(depth=10, width=1, num_classes=10)")
        .replace("from jemfast.models import wrn28_5", "from jemfast.models import WideResNet")
        .replace('device="cuda"', 'device="cpu"')
        .replace("(1, 32, 192)", "(1, 8, 16)")
        .replace("n_steps=50", "n_steps=2")
        .replace("epochs=150", "epochs=1")
    )
    torch.manual_seed(0)
    x, y = torch.randn(8, 1, 8, 16), torch.randint(0, 10, (8,))
    loader = [(x[:4], y[:4]), (x[4:], y[4:])]
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        exec(compile(snippet, "README.md", "exec"), {"train_loader": loader, "dev_loader": loader})
    assert (tmp_path / "runs" / "lang_jem" / "checkpoints" / "last.pt").is_file()
