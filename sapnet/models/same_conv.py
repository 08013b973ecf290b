"""The convolution of the network's blocks: stride-1, "same" padding, with a faster weight gradient on the CPU.

:func:`conv_same` is ``conv(x)`` (optionally on the first input channels only). When autograd records on the CPU
in float32 with channels_last input and at least 32 input channels, its backward computes the weight gradient
with batched GEMMs (:func:`_weight_grad_bmm`) instead of oneDNN; everywhere else, and while
``torch.jit.trace`` or ``torch.onnx.export`` records the network, it is plain ``F.conv2d``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["conv_same"]

_MIN_BMM_CHANNELS = 32
"""Below this many input channels oneDNN's own weight gradient is faster than :func:`_weight_grad_bmm`."""


def _weight_grad_bmm(grad: torch.Tensor, x: torch.Tensor, kernel: int, dilation: int) -> torch.Tensor:
    """The weight gradient of a stride-1 ``kernel`` x ``kernel`` convolution with "same" padding, as batched GEMMs.

    ``dW[o, i, ky, kx] = sum_{n, y, x} grad[n, o, y, x] * x_pad[n, i, y + d ky, x + d kx]``: with both tensors in
    NHWC and ``x`` zero-padded (one extra bottom row, so every window stays inside its image), each tap is one
    ``bmm`` over the images of ``grad`` (padded on the right to the padded width, zeros there) against a shifted,
    strided view of ``x_pad``; no im2col copy is made. On a 2-core AVX2 CPU this runs 10-30 % faster than oneDNN's
    ``jit:avx2`` / ``gemm`` weight-gradient kernels for 32 or 64 input channels. The summation order differs from
    oneDNN's, so the result agrees with it to float rounding (relative ~1e-5 in float32).
    """
    n, c_in, h, w = x.shape
    c_out = grad.shape[1]
    pad = dilation * (kernel - 1) // 2
    wp, hp = w + 2 * pad, h + 2 * pad + 1
    xp = F.pad(x, (pad, pad, pad, pad + 1)).permute(0, 2, 3, 1).reshape(n, hp * wp, c_in)
    gp = F.pad(grad, (0, 2 * pad)).permute(0, 2, 3, 1).reshape(n, h * wp, c_out).transpose(1, 2)
    k = h * wp
    out = grad.new_empty(c_out, kernel, kernel, c_in)
    for ky in range(kernel):
        for kx in range(kernel):
            off = (ky * wp + kx) * dilation
            torch.sum(torch.bmm(gp, xp[:, off : off + k]), 0, out=out[:, ky, kx])
    return out.permute(0, 3, 1, 2)  # (c_out, c_in, k, k), channels_last strides


class _SameConvCPU(torch.autograd.Function):
    """``F.conv2d(x, weight, bias, 1, padding=d (k-1)/2, dilation=d)``; the backward computes the input gradient
    with oneDNN as usual and the weight gradient with :func:`_weight_grad_bmm`."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.dilation, ctx.has_bias = dilation, bias is not None
        return F.conv2d(x, weight, bias, 1, dilation * (weight.shape[-1] - 1) // 2, dilation)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        d, k = ctx.dilation, weight.shape[-1]
        pad = d * (k - 1) // 2
        grad = grad.contiguous(memory_format=torch.channels_last)
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = grad_w = grad_b = None
        if need_x:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight, None, [1, 1], [pad, pad], [d, d], False, [0, 0], 1, [True, False, False]
            )[0]
        if need_w:
            grad_w = _weight_grad_bmm(grad, x, k, d)
        if need_b and ctx.has_bias:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None


def _recording_graph() -> bool:
    """Whether ``torch.jit.trace`` or ``torch.onnx.export`` is recording: graphs must hold the plain convolution
    (a Python autograd function can be neither saved nor exported, and the trace check runs without grad)."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def conv_same(conv: nn.Conv2d, x: torch.Tensor, in_channels: int | None = None) -> torch.Tensor:
    """``conv(x)`` for a stride-1 convolution with "same" padding, optionally restricted to its first
    ``in_channels`` input channels (``conv(cat(x, zeros))`` without the zeros).

    When autograd records on the CPU in float32 with channels_last input and at least 32 input channels, the
    weight gradient is computed by :func:`_weight_grad_bmm` instead of oneDNN (faster there; the same gradient up
    to float rounding). Everywhere else (no grad, CUDA, other dtypes or layouts, while ``torch.jit.trace`` or
    ``torch.onnx.export`` records) this is plain ``F.conv2d``.
    """
    weight = conv.weight if in_channels is None else conv.weight[:, :in_channels]
    d = conv.dilation[0]
    k = weight.shape[-1]
    if (
        torch.is_grad_enabled()
        and not _recording_graph()
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and x.shape[1] >= _MIN_BMM_CHANNELS
        and weight.requires_grad
        and x.is_contiguous(memory_format=torch.channels_last)
        and conv.groups == 1
        and conv.stride == (1, 1)
        and conv.dilation == (d, d)
        and weight.shape[-2] == k
        and k % 2 == 1
        and conv.padding == (d * (k - 1) // 2,) * 2
        and conv.padding_mode == "zeros"
    ):
        return _SameConvCPU.apply(x, weight, conv.bias, d)
    return F.conv2d(x, weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
