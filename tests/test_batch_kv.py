"""The hf engine's attention kernels: torch's fused CPU kernel and the portable path agree."""

from __future__ import annotations

import pytest
import torch

from ray_distill.engines.batch_kv import attention_with_lse, reference_attention_with_lse


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_fused_and_reference_attention_agree(dtype, tolerance):
    generator = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(shape, generator=generator).to(dtype)
                         for shape in ((3, 2, 5, 16), (3, 2, 40, 16), (3, 2, 40, 16)))
    visible = torch.rand((3, 1, 5, 40), generator=generator) > 0.5
    visible[..., 0] = True
    mask = torch.zeros(visible.shape, dtype=dtype).masked_fill_(~visible, float("-inf"))
    out, lse = attention_with_lse(query, key, value, mask, 0.25)
    expected, expected_lse = reference_attention_with_lse(query, key, value, mask, 0.25)
    scores = (query.float() @ key.float().transpose(-1, -2)) * 0.25 + mask.float()
    assert torch.allclose(expected.float(), scores.softmax(-1) @ value.float(), atol=tolerance)
    assert torch.allclose(out.float(), expected.float(), atol=tolerance)
    assert torch.allclose(lse, expected_lse, atol=tolerance)
