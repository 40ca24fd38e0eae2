"""The student model: loading it for training (with LoRA adapters or not), and its loss."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ray_distill.training.packing import IGNORE_INDEX


def lora_config(train):
    from peft import LoraConfig

    targets = train.lora_targets
    return LoraConfig(r=train.lora_r, lora_alpha=train.lora_alpha, lora_dropout=train.lora_dropout,
                      target_modules=targets[0] if targets == ["all-linear"] else list(targets),
                      task_type="CAUSAL_LM")


def load_student(model_dir: Path, train, dtype):
    """The model to train: the base weights in `dtype`, wrapped with fresh LoRA adapters when
    `train.lora` (the base then stays frozen)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(train.seed)  # the same LoRA initialisation on every rank and every run
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    model.config.use_cache = False
    if train.lora:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(train))
    return model


def loss_sum(model, batch: dict) -> tuple["torch.Tensor", int]:  # noqa: F821
    """Summed next-token cross entropy over the batch's target tokens, and their count. Summing
    (not averaging) lets the caller divide by the tokens of the whole global batch, so every
    target token weighs the same whatever packing, accumulation and rank it lands in."""
    import torch.nn.functional as F

    # Without a KV cache, transformers reads restarting position ids as packed examples and masks across them.
    logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[:, :-1]
    labels = batch["labels"][:, 1:].to(logits.device)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, int((labels != IGNORE_INDEX).sum())


def empty_batch(pad_id: int) -> dict:
    """A micro-batch without targets, for a rank whose share of a short last global batch ran out:
    it joins the step's collective operations and adds nothing to the loss."""
    import torch

    return {"input_ids": torch.tensor([[pad_id, pad_id]]), "labels": torch.tensor([[IGNORE_INDEX, IGNORE_INDEX]]),
            "position_ids": torch.tensor([[0, 1]])}


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def training_dtype(requested: Optional[str], on_gpu: bool):
    import torch

    name = requested or ("bfloat16" if on_gpu else "float32")
    return getattr(torch, name)
