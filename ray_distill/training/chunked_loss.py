"""The `chunked` loss kernel (loss.py): the output layer and cross entropy in one autograd function."""

from __future__ import annotations

import torch


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """sum_i CE(hidden[i] @ weight.T, targets[i]). The forward pass computes the loss and, at once, its
    gradients with respect to the hidden states and the weight, one chunk of `size` positions at a time,
    so no chunk's logits outlive it; the backward pass only scales the stored gradients."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, size: int):
        grad_hidden = torch.empty_like(hidden)
        # Summed over every chunk, so kept in float32 whatever the weights' precision.
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], size):
            h, t = hidden[start:start + size], targets[start:start + size]
            logits = (h @ weight.T).float()
            lse = torch.logsumexp(logits, dim=-1)
            rows = torch.arange(h.shape[0], device=h.device)
            total += (lse - logits[rows, t]).sum()
            # d(loss)/d(logits) = softmax - one-hot, made in place over the logits.
            logits.sub_(lse[:, None]).exp_()
            logits[rows, t] -= 1.0
            grad_logits = logits.to(h.dtype)
            grad_hidden[start:start + size] = grad_logits @ weight
            if grad_weight is not None:
                grad_weight += grad_logits.T @ h  # each chunk's product at the weights' precision
        ctx.save_for_backward(grad_hidden, *(() if grad_weight is None else (grad_weight,)))
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_output):
        # The incoming scale (1 / the global batch's targets) multiplies in float32, then each gradient takes
        # its tensor's precision.
        grad_hidden, *grad_weight = ctx.saved_tensors
        weight = (grad_weight[0] * grad_output).to(ctx.weight_dtype) if grad_weight else None
        return (grad_hidden.float() * grad_output).to(grad_hidden.dtype), weight, None, None
