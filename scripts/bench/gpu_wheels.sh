#!/usr/bin/env bash
# The wheels scripts/bench/gpu_train.py needs on a GPU machine without a package index, gathered here into
# DIR (default .whl), for a Python 3.12 image that has torch, transformers, peft and triton: DeepSpeed (built
# from its sdist without compiled ops: the bench keeps torch's AdamW, as the train stage does) with its
# dependencies, OmegaConf (the config schema), and the fused loss kernels. DeepSpeed and the dependencies
# take this checkout's .venv versions, so the bench runs what the tests here ran; the kernels are pinned below.
#   scripts/bench/gpu_wheels.sh && echo /.whl/ >> .git/info/exclude
# Then, on the GPU machine, with .whl copied there:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \
#     PYTHONPATH=/tmp/site:. python3 scripts/bench/gpu_train.py
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-.whl}
python=.venv/bin/python
pip=("$python" -m pip --disable-pip-version-check)
version() { "$python" -c "import importlib.metadata as m; print(m.version('$1'))"; }
mkdir -p "$out"
# setup.py imports torch: build with this venv's CPU torch rather than an isolated env's (a CUDA download).
DS_BUILD_OPS=0 "${pip[@]}" wheel -q --no-deps --no-build-isolation -w "$out" "deepspeed==$(version deepspeed)"
pins=()
# The image has einops, msgpack and py-cpuinfo too; they come along in case a later image does not.
for name in hjson einops msgpack py-cpuinfo omegaconf pydantic pydantic-core annotated-types typing-inspection; do
    pins+=("$name==$(version "$name")")
done
"${pip[@]}" download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$out" "${pins[@]}" liger-kernel==0.8.5 cut-cross-entropy==25.1.1
du -sh "$out"
