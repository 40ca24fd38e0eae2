"""The KV of the rows the hf engine decodes together, and the attention that reads it.

A batch's rows mostly share one long prefix (the system prompt and worked
examples; for SAG's N samples, the whole prompt). The shared prefix is held
once and every row's queries attend to it in one matrix product; each row's
own tokens (its history past the prefix, then what it generates) sit in a
preallocated buffer, so a decode step neither copies the prefix per row nor
re-concatenates the cache. Rows with different lengths share the buffer
through a validity mask: attention does not care where a key sits, since
its position is already rotated into it, so padding can go anywhere.

The attention function is registered with transformers under ATTENTION and
reaches this state through the `batch_kv` keyword the engine passes to the
model's forward, which transformers hands down to every attention layer.
"""

from __future__ import annotations

from typing import Optional

import torch
from transformers import AttentionInterface

ATTENTION = "ray_distill_shared_prefix"

# Bound on one prefill chunk's attention mask (and scores, off the fused kernel), in elements.
SCORE_BUDGET = 1 << 26


class BatchKV:
    def __init__(self, prefix: tuple[list[torch.Tensor], list[torch.Tensor]], rows: int, capacity: int):
        """`prefix`: keys and values per layer, each (1, kv_heads, P, head_dim)."""
        self.prefix_keys, self.prefix_values = prefix
        self.prefix_length = self.prefix_keys[0].shape[2]
        _, heads, _, dim = self.prefix_keys[0].shape
        like = self.prefix_keys[0]
        # Zeros, not garbage: a masked key still enters the products, and NaN * 0 is NaN.
        self.keys = [like.new_zeros((rows, heads, capacity, dim)) for _ in self.prefix_keys]
        self.values = [like.new_zeros((rows, heads, capacity, dim)) for _ in self.prefix_keys]
        self.valid = torch.zeros((rows, capacity), dtype=torch.bool, device=like.device)
        self.used = 0  # buffer columns written, the same for every row
        self._mask: Optional[torch.Tensor] = None

    @property
    def rows(self) -> int:
        return self.valid.shape[0]

    def lengths(self) -> torch.Tensor:
        """Tokens each row has seen, prefix included: its next position id."""
        return self.prefix_length + self.valid[:, :self.used].sum(-1)

    def fill(self, spans: list[tuple[list[torch.Tensor], list[torch.Tensor]]]) -> None:
        """Put each row's cached tokens (per layer (1, kv_heads, n_i, head_dim)) in an empty buffer."""
        width = max(keys[0].shape[2] for keys, _ in spans)
        self._reserve(width)
        for row, (keys, values) in enumerate(spans):
            n = keys[0].shape[2]
            for layer, (k, v) in enumerate(zip(keys, values)):
                self.keys[layer][row, :, width - n:width] = k[0]
                self.values[layer][row, :, width - n:width] = v[0]
            self.valid[row, width - n:width] = True
        self.used = width

    def forward(self, model, tokens: torch.Tensor, token_valid: torch.Tensor) -> torch.Tensor:
        """Run `tokens` (rows x width, left-padded where `token_valid` is False) through the
        model, appending their KV; returns the logits of the last column (rows x vocab)."""
        rows, width = tokens.shape
        scores_per_column = rows * model.config.num_attention_heads * (self.prefix_length + self.used + width)
        chunk = max(1, min(width, SCORE_BUDGET // scores_per_column))
        for begin in range(0, width, chunk):
            end = min(width, begin + chunk)
            logits = self._forward_chunk(model, tokens[:, begin:end], token_valid[:, begin:end])
        return logits

    def _forward_chunk(self, model, tokens: torch.Tensor, token_valid: torch.Tensor) -> torch.Tensor:
        rows, width = tokens.shape
        self._reserve(self.used + width)
        start = self.lengths()[:, None]
        positions = (start + token_valid.long().cumsum(-1) - 1).clamp(min=0)
        end = self.used + width
        self.valid[:, self.used:end] = token_valid
        # Earlier columns are visible where valid; new ones causally. A padded query also sees
        # itself, so no softmax row is empty.
        causal = torch.ones((width, width), dtype=torch.bool, device=tokens.device).tril()
        visible = self.valid[:, None, :end].expand(rows, width, end).clone()
        visible[:, :, self.used:] &= causal
        visible[:, :, self.used:] |= torch.eye(width, dtype=torch.bool, device=tokens.device)
        # Additive, and repeated for the query heads folded into each kv head's rows (see attend).
        groups = model.config.num_attention_heads // model.config.num_key_value_heads
        mask = torch.zeros(visible.shape, dtype=self.keys[0].dtype, device=tokens.device).masked_fill_(~visible, float("-inf"))
        self._mask = mask[:, None].expand(rows, groups, width, end).reshape(rows, 1, groups * width, end)
        try:
            out = model(input_ids=tokens, position_ids=positions, batch_kv=self, use_cache=False, logits_to_keep=1)
        finally:
            self._mask = None
        self.used = end
        return out.logits[:, -1, :].float()

    def attend(self, layer: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               scaling: float) -> torch.Tensor:
        """Attention of the new tokens' queries (rows, heads, width, head_dim) over the prefix,
        the buffer and themselves; returns (rows, width, heads, head_dim)."""
        rows, heads, width, dim = query.shape
        kv_heads = key.shape[1]
        end = self.used + width
        self.keys[layer][:, :, self.used:end] = key
        self.values[layer][:, :, self.used:end] = value
        # Query head h reads kv head h // groups: fold each kv head's query heads into its rows.
        grouped = query.reshape(rows, kv_heads, -1, dim)
        out, lse = attention_with_lse(grouped, self.keys[layer][:, :, :end], self.values[layer][:, :, :end],
                                      self._mask, scaling)
        if self.prefix_length:
            # Every row's queries against the one copy of the prefix, as a single product;
            # softmax over prefix and own keys together is the two parts weighed by their mass.
            stacked = grouped.transpose(0, 1).reshape(1, kv_heads, -1, dim)
            shared, shared_lse = attention_with_lse(stacked, self.prefix_keys[layer], self.prefix_values[layer],
                                                    None, scaling)
            shared = shared.view(kv_heads, rows, -1, dim).transpose(0, 1)
            shared_lse = shared_lse.view(kv_heads, rows, -1).transpose(0, 1)
            weight = torch.sigmoid(shared_lse - lse).unsqueeze(-1).to(out.dtype)
            out = torch.lerp(out, shared, weight)
        return out.reshape(rows, heads, width, dim).transpose(1, 2)

    def select(self, rows: torch.Tensor) -> None:
        """Keep only these rows, in this order (repeats allowed: n samples of one prompt)."""
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]
        self.valid = self.valid.index_select(0, rows)

    def row_span(self, row: int, length: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Copies of the KV of a row's last `length` tokens, per layer (1, kv_heads, length, head_dim)."""
        columns = self.valid[row, :self.used].nonzero().squeeze(-1)[-length:] if length else self.valid.new_zeros(0).long()
        return ([k[row:row + 1].index_select(2, columns) for k in self.keys],
                [v[row:row + 1].index_select(2, columns) for v in self.values])

    def merge(self, other: "BatchKV") -> None:
        """Append `other`'s rows; both must hold the same prefix."""
        used = max(self.used, other.used)
        capacity = used + max(self.keys[0].shape[2] - self.used, other.keys[0].shape[2] - other.used)
        self.keys = [torch.cat([self._placed(a, 2, used, capacity), other._placed(b, 2, used, capacity)])
                     for a, b in zip(self.keys, other.keys)]
        self.values = [torch.cat([self._placed(a, 2, used, capacity), other._placed(b, 2, used, capacity)])
                       for a, b in zip(self.values, other.values)]
        self.valid = torch.cat([self._placed(self.valid, 1, used, capacity), other._placed(other.valid, 1, used, capacity)])
        self.used = used

    def _placed(self, t: torch.Tensor, dim: int, used: int, capacity: int) -> torch.Tensor:
        """`t`'s written columns moved to end at column `used`, in a buffer of `capacity` columns."""
        shape = list(t.shape)
        shape[dim] = capacity
        out = t.new_zeros(shape)
        out.narrow(dim, used - self.used, self.used).copy_(t.narrow(dim, 0, self.used))
        return out

    def shorten_prefix(self, length: int) -> None:
        """Share only the first `length` prefix tokens; every row gets its own copy of the rest."""
        moved = self.prefix_length - length
        if moved <= 0:
            return
        self.keys = [torch.cat([p[:, :, length:].expand(self.rows, -1, -1, -1), k], dim=2)
                     for p, k in zip(self.prefix_keys, self.keys)]
        self.values = [torch.cat([p[:, :, length:].expand(self.rows, -1, -1, -1), v], dim=2)
                       for p, v in zip(self.prefix_values, self.values)]
        self.valid = torch.cat([self.valid.new_ones((self.rows, moved)), self.valid], dim=1)
        self.used += moved
        self.prefix_keys = [p[:, :, :length] for p in self.prefix_keys]
        self.prefix_values = [p[:, :, :length] for p in self.prefix_values]
        self.prefix_length = length

    def _reserve(self, columns: int) -> None:
        capacity = self.keys[0].shape[2]
        if columns <= capacity:
            return
        grow = max(columns, 2 * capacity) - capacity
        self.keys = [torch.nn.functional.pad(k, (0, 0, 0, grow)) for k in self.keys]
        self.values = [torch.nn.functional.pad(v, (0, 0, 0, grow)) for v in self.values]
        self.valid = torch.nn.functional.pad(self.valid, (0, grow), value=False)


def attention_with_lse(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: Optional[torch.Tensor],
                       scaling: float) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T * scaling + mask) v and the log of the softmax's normaliser per query.
    `mask` is additive, in the query's dtype. The CPU uses torch's fused kernel."""
    if query.device.type == "cpu":
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(query, key, value, attn_mask=mask, scale=scaling)
    return reference_attention_with_lse(query, key, value, mask, scaling)


def reference_attention_with_lse(query, key, value, mask, scaling):
    scores = torch.matmul(query, key.transpose(-1, -2)).float() * scaling
    if mask is not None:
        scores += mask
    lse = scores.logsumexp(-1)
    return torch.matmul((scores - lse.unsqueeze(-1)).exp().to(value.dtype), value), lse


def shared_prefix_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, *,
                            batch_kv: BatchKV, **kwargs):
    if kwargs.get("sliding_window") or kwargs.get("softcap"):
        raise NotImplementedError("the hf engine's shared-prefix attention supports neither sliding windows "
                                  "nor logit soft-capping; serve this model with the vllm backend")
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    return batch_kv.attend(module.layer_idx, query, key, value, scaling), None


def register() -> None:
    AttentionInterface.register(ATTENTION, shared_prefix_attention)
