"""How the examples of a packed row attend only to themselves: the attention paths a student trains with.

A packed row lays several examples end to end, with position ids that restart
at 0 for each (`packing.py`). Every path below keeps attention inside an
example; they differ in how:

- `flash_attention_2`: transformers' flash-attn integration, variable-length
  kernels over the examples (CUDA, with the `flash-attn` package installed).
- `varlen`: PyTorch's own variable-length flash attention
  (`torch.nn.attention.varlen`, CUDA).
- `segments`: one causal SDPA call per example. No mask, so SDPA's flash and
  memory-efficient kernels apply; it runs on any device.
- `flex_attention`: transformers' flex attention with a block mask made from
  the position ids (its backward needs CUDA).
- `sdpa`: transformers' SDPA with a dense block-diagonal mask made from the
  position ids. It was the only path before the others existed; a dense mask
  rules out SDPA's flash kernel, and every layer keeps its own S x S copy for
  the backward pass.
- `eager`: transformers' matmul-softmax attention (materialises the scores).

The first three take the example boundaries as `cu_seq_lens` (the
FlashAttention keyword arguments transformers passes down to the attention
function), over the micro-batch's rows flattened into one: no mask is built
at all. `auto` picks the first of them that runs here: on CUDA
flash_attention_2 or varlen, elsewhere segments (on CPU faster than sdpa too:
`scripts/bench/training.py`).
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
from typing import Any, Optional

PATHS = ("flash_attention_2", "varlen", "segments", "flex_attention", "sdpa", "eager")
# Paths that read example boundaries from cu_seq_lens (over one flattened row) instead of a mask.
MASK_FREE = ("flash_attention_2", "varlen", "segments")
# Registered with transformers under these names (its own names are left to its own implementations).
_REGISTERED = {"varlen": "ray_distill_varlen", "segments": "ray_distill_segments"}

# torch and transformers are imported in the functions that use them: ray_distill.config imports this module
# (PATHS), and the fast commands (`ray-distill --help`, `config`, `models`, `benchmarks`) load neither.
# torch.nn.attention.varlen exists only in new torch releases.


def unavailable(path: str, device_type: str, model_config=None, dtype=None) -> Optional[str]:
    """Why `path` cannot train here (on this device, for the model of `model_config` in `dtype`), or None
    when it can."""
    import torch

    if path not in PATHS:
        return f"unknown attention path {path!r}; known: auto, {', '.join(PATHS)}"
    cuda = device_type == "cuda" and torch.cuda.is_available()
    if path in ("flash_attention_2", "varlen"):
        if not cuda:
            return f"{path} needs a CUDA device"
        if torch.cuda.get_device_capability() < (8, 0):
            return f"{path} needs a GPU of compute capability 8.0 or newer (an A100 or later)"
        if dtype is not None and dtype not in (torch.float16, torch.bfloat16):
            return f"{path} needs bfloat16 or float16 weights, not {dtype}"
    if path == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        return "flash_attention_2 needs the flash-attn package"
    if path == "varlen" and importlib.util.find_spec("torch.nn.attention.varlen") is None:
        return f"varlen needs torch.nn.attention.varlen (torch {torch.__version__} lacks it)"
    if path == "flex_attention" and not cuda:
        return "flex_attention's backward pass needs a CUDA device"
    if path in _REGISTERED and model_config is not None:
        return _beyond_plain_causal(model_config)
    return None


def _beyond_plain_causal(config) -> Optional[str]:
    """What of the model's attention the varlen and segments paths leave out, if anything."""
    types = getattr(config, "layer_types", None)
    if ("sliding_attention" in types) if types else getattr(config, "sliding_window", None) is not None:
        return "the model uses sliding-window attention"
    if getattr(config, "attention_dropout", 0.0):
        return "the model has attention dropout"
    if getattr(config, "attn_logit_softcapping", None):
        return "the model soft-caps attention logits"
    return None


def resolve(requested: str, device_type: str, model_config=None, dtype=None) -> tuple[str, Optional[str]]:
    """The path to train with, and a note when it is not the one requested. `auto` is the first mask-free
    path that runs here (sdpa for a model none of them supports); a requested path that cannot run here
    falls back to what `auto` picks."""
    if requested == "auto":
        return next(p for p in MASK_FREE + ("sdpa",) if unavailable(p, device_type, model_config, dtype) is None), None
    reason = unavailable(requested, device_type, model_config, dtype)
    if reason is None:
        return requested, None
    fallback, _ = resolve("auto", device_type, model_config, dtype)
    return fallback, f"train.attention={requested} cannot run here ({reason}): {fallback} instead"


def use(lm, path: str) -> None:
    """Make `lm` (a transformers causal LM, not a peft wrapper) attend with `path`."""
    from transformers import AttentionInterface

    AttentionInterface.register(_REGISTERED["varlen"], _varlen_attention)
    AttentionInterface.register(_REGISTERED["segments"], _segment_attention)
    lm.set_attn_implementation(_REGISTERED.get(path, path))


def row_inputs(path: str, input_ids, position_ids, labels) -> tuple[Any, Any, Any, dict[str, Any]]:
    """A micro-batch as the model takes it on `path`: for the mask-free paths its rows flattened into one
    (position ids already restart at every example and at every row) and the example boundaries as
    keyword arguments; for the others the rows as they are."""
    if path not in MASK_FREE:
        return input_ids, position_ids, labels, {}
    import torch

    flat = position_ids.reshape(-1)
    starts = (flat == 0).nonzero().reshape(-1).tolist() + [flat.numel()]
    if starts[0] != 0:
        raise ValueError("a packed row must start an example at position 0")
    lengths = [b - a for a, b in zip(starts, starts[1:])]
    # The segments path slices on the host, so its boundaries stay there; the kernels want them on the device.
    bounds = torch.tensor(starts, dtype=torch.int32, device="cpu" if path == "segments" else flat.device)
    longest = max(lengths)
    kwargs = {"cu_seq_lens_q": bounds, "cu_seq_lens_k": bounds, "max_length_q": longest, "max_length_k": longest}
    return input_ids.reshape(1, -1), flat.reshape(1, -1), labels.reshape(1, -1), kwargs


def _check(module, dropout: float, sliding_window, softcap) -> None:
    if dropout or sliding_window or softcap:
        raise NotImplementedError(
            f"{type(module).__name__}: attention dropout, sliding windows and logit soft-capping are not "
            "supported by the varlen and segments paths; set train.attention to flash_attention_2 or sdpa")


def _segment_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                       sliding_window=None, softcap=None, **kwargs):
    """One causal SDPA call per example; query/key/value are (1, heads, tokens, head_dim)."""
    import torch
    import torch.nn.functional as F

    _check(module, dropout, sliding_window, softcap)
    bounds = kwargs["cu_seq_lens_q"].tolist()
    gqa = key.shape[1] != query.shape[1]
    parts = [F.scaled_dot_product_attention(query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], is_causal=True,
                                            scale=scaling, enable_gqa=gqa) for a, b in zip(bounds, bounds[1:])]
    return torch.cat(parts, dim=2).transpose(1, 2).contiguous(), None


@functools.cache
def _varlen_parameters() -> frozenset[str]:
    """The keyword arguments this torch's varlen_attn takes (they changed between releases)."""
    from torch.nn.attention.varlen import varlen_attn

    return frozenset(inspect.signature(varlen_attn).parameters)


def _varlen_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                      sliding_window=None, softcap=None, **kwargs):
    """PyTorch's variable-length flash attention over the flattened row."""
    from torch.nn.attention.varlen import varlen_attn

    _check(module, dropout, sliding_window, softcap)
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (tokens, heads, head_dim)
    bounds, longest = kwargs["cu_seq_lens_q"], kwargs["max_length_q"]
    accepts = _varlen_parameters()
    if "enable_gqa" not in accepts and k.shape[1] != q.shape[1]:  # before torch 2.12: equal head counts only
        groups = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    extra: dict[str, Any] = {"enable_gqa": True} if "enable_gqa" in accepts and k.shape[1] != q.shape[1] else {}
    if "scale" in accepts:
        extra["scale"] = scaling
    elif scaling is not None and abs(scaling - q.shape[-1] ** -0.5) > 1e-12:
        raise NotImplementedError("this torch's varlen_attn has no scale argument; set train.attention=segments")
    # Causal as a window from torch 2.11 on (its is_causal flag is deprecated there), a flag before.
    extra.update({"window_size": (-1, 0)} if "window_size" in accepts else {"is_causal": True})
    return varlen_attn(q, k, v, bounds, bounds, longest, longest, **extra).unsqueeze(0), None
