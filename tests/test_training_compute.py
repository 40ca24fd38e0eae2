"""How a student computes a training step: attention paths over packed rows, loss kernels without a
row's full logits, gradient checkpointing. Each must give the loss and gradients of the plain path."""

from __future__ import annotations

import pytest
import torch

from ray_distill.training import attention, loss
from ray_distill.training.examples import SFTExample
from ray_distill.training.packing import collate, one_per_sequence, pack
from ray_distill.training.student import Compute, for_training, loss_sum, prepare

CPU_PATHS = [p for p in attention.PATHS if attention.unavailable(p, "cpu") is None]


def examples() -> list[SFTExample]:
    """Examples of different lengths whose targets are spans (actions) between untrained ones."""
    rng = torch.Generator().manual_seed(0)
    return [SFTExample(f"e{i}", torch.randint(5, 1000, (n,), generator=rng).tolist(), [j % 7 > 2 for j in range(n)])
            for i, n in enumerate((41, 17, 9, 33, 26))]


def student(tiny_model, lora: bool, dropout: float = 0.0):
    """The tiny student; LoRA's B starts non-zero, so that every adapter weight has a gradient to compare."""
    from transformers import AutoModelForCausalLM

    from ray_distill.config.schema import TrainConfig

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    model = for_training(model, TrainConfig(lora=lora, lora_r=8, lora_alpha=16, lora_dropout=dropout))
    generator = torch.Generator().manual_seed(2)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0.0, 0.05, generator=generator)
    return model.train()


def loss_and_grads(model, batch) -> tuple[float, int, torch.Tensor]:
    torch.manual_seed(1)  # the same dropout masks for every path
    value, targets = loss_sum(model, batch)
    value.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])
    assert grads.abs().gt(0).float().mean() > 0.5  # most weights get a gradient: the comparison is not 0 == 0
    return float(value.detach()), targets, grads


def test_auto_picks_what_runs_here_and_a_choice_that_cannot_run_falls_back_with_a_note(tiny_model):
    from transformers import AutoConfig

    assert "segments" in CPU_PATHS and "sdpa" in CPU_PATHS
    assert attention.resolve("auto", "cpu") == ("segments", None)
    assert attention.resolve("sdpa", "cpu") == ("sdpa", None)
    for path in ("varlen", "flash_attention_2", "flex_attention"):
        chosen, note = attention.resolve(path, "cpu")
        assert chosen == "segments" and note.startswith(f"train.attention={path} cannot run here") and "CUDA" in note
    # A model whose attention the mask-free custom paths leave out gets transformers' own.
    windowed = AutoConfig.from_pretrained(tiny_model)
    windowed.sliding_window = 16
    assert attention.resolve("auto", "cpu", windowed) == ("sdpa", None)
    assert loss.resolve("auto", "cpu") == ("chunked", None)
    chosen, note = loss.resolve("liger", "cpu")
    assert chosen == "chunked" and note.startswith("train.loss_kernel=liger cannot run here") and "CUDA" in note
    assert loss.resolve("auto", "cpu", plain_head=False) == ("full", None)


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
@pytest.mark.parametrize("path", CPU_PATHS)
def test_a_packed_row_trains_like_its_examples_one_by_one_on_every_cpu_attention_path(tiny_model, path, lora):
    """Three packed rows (flattened into one on the mask-free paths) give the summed loss and the gradients of
    the examples computed alone, on the old path."""
    parts = examples()
    packed = collate([s.to_row() for s in pack(parts, 64)], pad_id=0)
    assert packed["input_ids"].shape[0] == 3  # rows of different lengths: padding forms its own block
    model = student(tiny_model, lora=lora)
    prepare(model, Compute(path, "chunked", checkpointing=False))
    got, targets, grads = loss_and_grads(model, packed)

    alone = student(tiny_model, lora=lora)
    prepare(alone, Compute("sdpa", "full", checkpointing=False))
    reference = [loss_sum(alone, collate([s.to_row()], pad_id=0)) for s in one_per_sequence(parts)]
    total = sum(value for value, _ in reference)
    total.backward()
    expected = torch.cat([p.grad.flatten() for p in alone.parameters() if p.requires_grad])
    assert targets == sum(n for _, n in reference) == sum(e.trained_tokens - e.trained[0] for e in parts)
    assert got == pytest.approx(float(total.detach()), rel=1e-5)
    torch.testing.assert_close(grads, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_the_chunked_loss_gives_the_full_logits_loss_and_gradients(tiny_model, lora):
    """Full fine-tuning trains the (tied) output weights through the chunked kernel's weight gradient."""
    batch = collate([s.to_row() for s in pack(examples(), 64)], pad_id=0)
    results = {}
    for kernel in ("full", "chunked"):
        model = student(tiny_model, lora=lora)
        prepare(model, Compute("segments", kernel, checkpointing=False))
        results[kernel] = loss_and_grads(model, batch)
    (full, n_full, g_full), (chunked, n_chunked, g_chunked) = results["full"], results["chunked"]
    assert n_full == n_chunked and chunked == pytest.approx(full, rel=1e-6)
    torch.testing.assert_close(g_chunked, g_full, rtol=1e-4, atol=1e-6)


def test_the_chunked_kernel_over_many_chunks_matches_cross_entropy():
    from ray_distill.training.chunked_loss import ChunkedLinearCrossEntropy

    torch.manual_seed(0)
    hidden = torch.randn(50, 16, requires_grad=True)
    weight = torch.randn(300, 16, requires_grad=True)
    targets = torch.randint(0, 300, (50,))
    got = ChunkedLinearCrossEntropy.apply(hidden, weight, targets, 7)  # 8 chunks, the last one short
    (2 * got).backward()
    grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    expected = torch.nn.functional.cross_entropy(hidden @ weight.T, targets, reduction="sum")
    (2 * expected).backward()
    assert float(got.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    torch.testing.assert_close(grads, (hidden.grad, weight.grad), rtol=1e-5, atol=1e-6)


def test_a_micro_batch_without_targets_still_backpropagates_through_every_trained_weight(tiny_model):
    """A rank whose share of a short last global batch ran out joins the step with an empty batch: its
    loss is 0 and every trainable weight gets a (zero) gradient, so ZeRO's reduction hooks all fire."""
    from ray_distill.training.student import empty_batch

    model = student(tiny_model, lora=True)
    prepare(model, Compute("segments", "chunked", checkpointing=False))
    value, targets = loss_sum(model, empty_batch(pad_id=0))
    value.backward()
    assert targets == 0 and float(value.detach()) == 0.0
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters() if p.requires_grad)


def test_gradient_checkpointing_replays_dropout_and_gives_the_same_gradients(tiny_model):
    batch = collate([s.to_row() for s in pack(examples(), 64)], pad_id=0)
    runs = []
    for checkpointing in (False, True):
        model = student(tiny_model, lora=True, dropout=0.1)
        prepare(model, Compute("segments", "chunked", checkpointing=checkpointing))
        runs.append(loss_and_grads(model, batch))
    assert runs[1][0] == pytest.approx(runs[0][0], rel=1e-6)
    torch.testing.assert_close(runs[1][2], runs[0][2], rtol=1e-4, atol=1e-6)


def test_a_head_the_fused_kernels_would_get_wrong_is_refused(tiny_model):
    model = student(tiny_model, lora=False)
    model.config.final_logit_softcapping = 30.0
    with pytest.raises(ValueError, match="train.loss_kernel=full"):
        prepare(model, Compute("segments", "chunked", checkpointing=False))
