"""The trained student as a Hugging Face directory that the hf engine and vLLM load directly.

Reads the final DeepSpeed checkpoint (any ZeRO stage: the fp32 weights are
gathered from the shards), puts them into a fresh copy of the student, and
saves either the merged model or, for LoRA, the adapter alone with a
pointer to its base model. Written to a temporary folder and renamed, so a
crash never leaves half an export.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

EXPORT_INFO = "ray_distill_export.json"


def export_student(checkpoint_dir: Path, tag: str, base_dir: Path, train, out_dir: Path, info: dict) -> Path:
    # local: DeepSpeed is absent on the GPU bench machine; and stages/paths.py imports EXPORT_INFO from here for
    # every stage command, which then loads neither torch, transformers nor peft (the student) until an export
    import torch
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    from ray_distill.training.student import load_student

    state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir), tag, exclude_frozen_parameters=train.lora)
    model = load_student(base_dir, train, torch.float32)
    missing, unexpected = model.load_state_dict(state, strict=False)
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    lost = sorted(trained & set(missing))
    if unexpected or lost:
        raise RuntimeError(f"checkpoint {checkpoint_dir} does not match the student: "
                           f"unexpected {unexpected[:3]}, trained weights missing {lost[:3]}")

    tmp = out_dir.with_name(f".tmp-{out_dir.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    if train.lora and train.export == "adapter":
        model.peft_config["default"].base_model_name_or_path = str(base_dir)
        model.save_pretrained(tmp)
    else:
        if train.lora:
            model = model.merge_and_unload()
        model.config.use_cache = True
        # Merged in fp32, saved in the base's dtype (a bf16 base stays half the size of fp32).
        model.to(getattr(AutoConfig.from_pretrained(base_dir), "dtype", None) or torch.float32).save_pretrained(tmp)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(tmp)
    try:
        GenerationConfig.from_pretrained(base_dir).save_pretrained(tmp)
    except OSError:  # the base has no generation config: transformers' defaults apply
        pass
    (tmp / EXPORT_INFO).write_text(json.dumps({**info, "base_model": str(base_dir), "export": train.export,
                                               "lora": train.lora}, indent=1) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir
