"""The student model: loading it for training (with LoRA adapters or not), how it computes a step
(attention path, loss kernel, checkpointing), and its loss."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from ray_distill.training import attention
from ray_distill.training.loss import linear_cross_entropy
from ray_distill.training.packing import IGNORE_INDEX


def lora_config(train):
    targets = train.lora_targets
    return LoraConfig(r=train.lora_r, lora_alpha=train.lora_alpha, lora_dropout=train.lora_dropout,
                      target_modules=targets[0] if targets == ["all-linear"] else list(targets),
                      task_type="CAUSAL_LM")


def load_student(model_dir: Path, train, dtype):
    """The model to train: the base weights in `dtype`, with fresh LoRA adapters when `train.lora`."""
    return for_training(AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype), train)


def for_training(model, train):
    """`model` ready to train: no KV cache, and when `train.lora` wrapped with fresh LoRA adapters (the
    base then stays frozen). The random state starts from `train.seed`: the same adapters and dropout on
    every rank and every run."""
    torch.manual_seed(train.seed)
    model.config.use_cache = False
    if not train.lora:
        return model
    return get_peft_model(model, lora_config(train))


@dataclass(frozen=True)
class Compute:
    """How a worker computes a step: the attention path (attention.py), the loss kernel (loss.py) and
    whether each layer's activations are recomputed in the backward pass instead of kept."""

    attention: str
    loss_kernel: str
    checkpointing: bool

    def describe(self) -> str:
        return (f"attention {self.attention}, loss {self.loss_kernel}, gradient checkpointing "
                f"{'on' if self.checkpointing else 'off'}")


def prepare(model, compute: Compute) -> None:
    """Set `model` (a transformers causal LM, or a peft model around one) up to train as `compute` says, and
    make its forward return `loss_sum`'s pair. The loss is computed inside the forward so a training
    engine's own forward wraps it (DeepSpeed arms ZeRO-3's gathers and its backward prologue there), while
    parameter names stay the model's own (checkpoints and exports are unchanged)."""
    lm = causal_lm(model)
    if compute.loss_kernel != "full" and not plain_output_head(lm):
        raise ValueError(f"{type(lm).__name__} transforms its logits beyond one linear layer (a bias, scaling or "
                         "soft-capping), which the fused loss kernels leave out; set train.loss_kernel=full")
    attention.use(lm, compute.attention)
    if compute.checkpointing:
        # Non-reentrant checkpointing needs no input that requires grad (LoRA leaves the embeddings frozen),
        # and replays each layer's dropout masks exactly.
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.forward = functools.partial(_loss_forward, model, lm, compute)


def causal_lm(model):
    """The transformers model inside a peft model (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def plain_output_head(model) -> bool:
    """Whether the logits are one plain linear layer of the hidden states, as the fused loss kernels compute
    them (no bias, adapter, scaling or soft-capping)."""
    lm = causal_lm(model)
    head = lm.get_output_embeddings()
    transforms = [getattr(lm.config, name, None) for name in ("final_logit_softcapping", "logit_scale",
                                                              "logits_scaling")]
    # A LoRA adapter on the head (lora_targets naming lm_head) wraps it: the kernels would skip the adapter.
    return (type(head) is torch.nn.Linear and head.bias is None) and all(t in (None, 1, 1.0) for t in transforms)


def _loss_forward(model, lm, compute: Compute, input_ids, position_ids, labels):
    input_ids, position_ids, labels, kwargs = attention.row_inputs(compute.attention, input_ids, position_ids, labels)
    shifted = labels[:, 1:]
    keep = shifted != IGNORE_INDEX
    if compute.loss_kernel == "full":
        logits = type(model).forward(model, input_ids=input_ids, position_ids=position_ids, use_cache=False,
                                     **kwargs).logits[:, :-1]
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), shifted.reshape(-1),
                               ignore_index=IGNORE_INDEX, reduction="sum")
    else:
        hidden = lm.get_decoder()(input_ids=input_ids, position_ids=position_ids, use_cache=False,
                                  **kwargs).last_hidden_state
        loss = linear_cross_entropy(hidden[:, :-1][keep], lm.get_output_embeddings().weight, shifted[keep],
                                    compute.loss_kernel)
    return loss, int(keep.sum())


def loss_sum(model, batch: dict) -> tuple[torch.Tensor, int]:
    """Summed next-token cross entropy over the batch's target tokens, and their count, from a model set up
    by `prepare` (or a training engine around one). Summing (not averaging) lets the caller divide by the
    tokens of the whole global batch, so every target token weighs the same whatever packing,
    accumulation and rank it lands in."""
    return model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], labels=batch["labels"])


def empty_batch(pad_id: int) -> dict:
    """A micro-batch without targets, for a rank whose share of a short last global batch ran out:
    it joins the step's collective operations and adds nothing to the loss."""
    return {"input_ids": torch.tensor([[pad_id, pad_id]]), "labels": torch.tensor([[IGNORE_INDEX, IGNORE_INDEX]]),
            "position_ids": torch.tensor([[0, 1]])}


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def training_dtype(requested: Optional[str], on_gpu: bool):
    name = requested or ("bfloat16" if on_gpu else "float32")
    return getattr(torch, name)
