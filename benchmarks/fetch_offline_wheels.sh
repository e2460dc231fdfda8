#!/usr/bin/env bash
# Download the wheels jemfast needs beyond a CUDA PyTorch image, for a GPU machine
# that cannot reach a package registry:
#
#   bash benchmarks/fetch_offline_wheels.sh [DIR]      # default DIR: .whl (git-ignored)
#
# Run it on a machine with registry access, bring DIR along, and
# benchmarks/run_gpu_suite.sh installs from it (pip --no-index, into a private
# folder on PYTHONPATH) before anything imports jemfast.
#
# The list is what such images usually lack: the audio stack (librosa and what it
# needs that is not a scientific-Python staple) and the nvtx bindings. torch, triton,
# numpy, scipy, numba, scikit-learn, matplotlib, pyyaml, tqdm and pytest are expected
# on the image. TARGET_PYTHON (default 3.12) picks the wheels' Python version.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-$ROOT/.whl}"
PY_VERSION="${TARGET_PYTHON:-3.12}"
PACKAGES=(
  librosa==0.11.0 audioread==3.1.0 soundfile==0.14.0 soxr==1.1.0 pooch==1.9.0
  platformdirs==4.14.8 decorator==5.2.1 cffi==2.0.0 pycparser==2.23 nvtx==0.2.17
)
mkdir -p "$DIR"
PLATFORMS=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
           manylinux_2_5_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$tag")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
  "${PLATFORMS[@]}" -d "$DIR" "${PACKAGES[@]}"
ls -1 "$DIR"
