"""Building blocks of the recurrent derain network.

All blocks take and return float feature maps of shape (N, C, H, W); they work in any dtype and memory format
(NCHW or channels_last) and on any device.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = [
    "ChannelResidualAttention",
    "ConvGRUCell",
    "ConvLSTMCell",
    "RecurrentState",
    "ResidualBlock",
    "conv_same",
]

RecurrentState = tuple[torch.Tensor, ...]
"""State carried between stages: ``(h, c)`` for the LSTM cell, ``(h,)`` for the GRU cell."""


def _inplace_ok() -> bool:
    """In-place updates of saved activations are only safe when autograd is not recording."""
    return not torch.is_grad_enabled()


# --- 3x3 convolutions with a faster weight gradient on the CPU ------------------------------------------------

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


def conv_same(conv: nn.Conv2d, x: torch.Tensor, in_channels: int | None = None) -> torch.Tensor:
    """``conv(x)`` for a stride-1 convolution with "same" padding, optionally restricted to its first
    ``in_channels`` input channels (``conv(cat(x, zeros))`` without the zeros).

    When autograd records on the CPU in float32 with channels_last input and at least 32 input channels, the
    weight gradient is computed by :func:`_weight_grad_bmm` instead of oneDNN (faster there; the same gradient up
    to float rounding). Everywhere else (no grad, CUDA, other dtypes or layouts) this is plain ``F.conv2d``.
    """
    weight = conv.weight if in_channels is None else conv.weight[:, :in_channels]
    d = conv.dilation[0]
    k = weight.shape[-1]
    if (
        torch.is_grad_enabled()
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


class ChannelResidualAttention(nn.Module):
    """Channel residual attention (CRA) of SAPNet.

    ``s = mean_{H,W}(x)``; ``a = sigmoid(expand(relu(reduce(s))) + skip(s))``; returns ``x * a``.
    ``reduce`` (C -> C / reduction), ``expand`` (C / reduction -> C) and ``skip`` (C -> C) are bias-free
    1x1 convolutions. Without autograd, ``x`` is scaled in place.

    Args:
        channels: number of feature channels C.
        reduction: squeeze ratio of the bottleneck (SAPNet: 16, i.e. 32 -> 2 channels).
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.reduce = nn.Conv2d(channels, hidden, 1, bias=False)
        self.expand = nn.Conv2d(hidden, channels, 1, bias=False)
        self.skip = nn.Conv2d(channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, H, W), ``x`` scaled per channel by weights in (0, 1)."""
        s = x.mean(dim=(2, 3), keepdim=True)
        a = torch.sigmoid(self.expand(F.relu(self.reduce(s))) + self.skip(s))
        return x.mul_(a) if _inplace_ok() else x * a


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with ReLU, optionally dilated and followed by CRA.

    ``conv1 -> [CRA] -> relu -> conv2 -> [CRA] -> relu``; the skip connection and the final ReLU
    (``relu(block(z) + z)``) are applied by the caller. Spatial size is preserved (padding = dilation).

    Args:
        channels: feature channels C (input and output).
        dilation: dilation rate of both convolutions (SAPNet: 1, 2, 4, 8, 16 for blocks 1..5; PReNet: 1).
        attention: whether CRA follows each convolution.
        reduction: CRA bottleneck ratio.
    """

    def __init__(self, channels: int, dilation: int = 1, attention: bool = True, reduction: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.attn1 = ChannelResidualAttention(channels, reduction) if attention else nn.Identity()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.attn2 = ChannelResidualAttention(channels, reduction) if attention else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, H, W) residual, non-negative."""
        # ReLU in place is autograd-safe here: it only overwrites fresh conv / attention outputs.
        x = self.attn1(conv_same(self.conv1, x)).relu_()
        return self.attn2(conv_same(self.conv2, x)).relu_()


def _conv_on_input_half(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(cat(x, zeros))`` without the zeros: the convolution restricted to its first input channels."""
    return conv_same(conv, x, x.shape[1])


class ConvLSTMCell(nn.Module):
    """Convolutional LSTM cell.

    On ``u = cat(x, h)``, four 3x3 convolutions (2C -> C each) give the gates:
    ``i, f, o = sigmoid(input_gate(u)), sigmoid(forget_gate(u)), sigmoid(output_gate(u))``,
    ``g = tanh(cell_gate(u))``; then ``c' = f * c + i * g`` and ``h' = o * tanh(c')``.
    The initial state is zero (``state=None``): the forget gate and the ``h`` half of each gate convolution
    then contribute nothing and are skipped. (Four separate convolutions run faster on the CPU in
    channels_last than one fused 2C -> 4C convolution, whose gate slices would be strided.)
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.input_gate = nn.Conv2d(2 * channels, channels, 3, padding=1)
        self.forget_gate = nn.Conv2d(2 * channels, channels, 3, padding=1)
        self.cell_gate = nn.Conv2d(2 * channels, channels, 3, padding=1)
        self.output_gate = nn.Conv2d(2 * channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, state: RecurrentState | None = None) -> tuple[torch.Tensor, RecurrentState]:
        """``x`` (N, C, H, W) and state ``(h, c)`` (``None``: zeros) -> output ``h'`` and state ``(h', c')``."""
        if state is None:
            i = _conv_on_input_half(self.input_gate, x).sigmoid_()
            g = _conv_on_input_half(self.cell_gate, x).tanh_()
            o = _conv_on_input_half(self.output_gate, x).sigmoid_()
            c = i * g
        else:
            h, c = state
            u = torch.cat((x, h), dim=1)
            i = conv_same(self.input_gate, u).sigmoid_()
            f = conv_same(self.forget_gate, u).sigmoid_()
            g = conv_same(self.cell_gate, u).tanh_()
            o = conv_same(self.output_gate, u).sigmoid_()
            c = c.mul_(f).addcmul_(i, g) if _inplace_ok() else f * c + i * g
        h = o.mul_(torch.tanh(c)) if _inplace_ok() else o * torch.tanh(c)
        return h, (h, c)


class ConvGRUCell(nn.Module):
    """Convolutional GRU cell.

    ``z = sigmoid(update_gate(cat(x, h)))``, ``r = sigmoid(reset_gate(cat(x, h)))``,
    ``n = tanh(candidate(cat(x, r * h)))``, ``h' = (1 - z) * h + z * n``; the initial state is zero.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.update_gate = nn.Conv2d(2 * channels, channels, 3, padding=1)
        self.reset_gate = nn.Conv2d(2 * channels, channels, 3, padding=1)
        self.candidate = nn.Conv2d(2 * channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, state: RecurrentState | None = None) -> tuple[torch.Tensor, RecurrentState]:
        """``x`` (N, C, H, W) and state ``(h,)`` (``None``: zeros) -> output ``h'`` and state ``(h',)``."""
        if state is None:
            z = _conv_on_input_half(self.update_gate, x).sigmoid_()
            h = z * _conv_on_input_half(self.candidate, x).tanh_()
            return h, (h,)
        (h,) = state
        u = torch.cat((x, h), dim=1)
        z = conv_same(self.update_gate, u).sigmoid_()
        r = conv_same(self.reset_gate, u).sigmoid_()
        n = conv_same(self.candidate, torch.cat((x, r * h), dim=1)).tanh_()
        h = h + z * (n - h)
        return h, (h,)
