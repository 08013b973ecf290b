"""Building blocks of the recurrent derain network.

All blocks take and return float feature maps of shape (N, C, H, W); they work in any dtype and memory format
(NCHW or channels_last) and on any device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

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


def conv_same(conv: nn.Conv2d, x: torch.Tensor, in_channels: int | None = None) -> torch.Tensor:
    """``conv(x)`` for a convolution of the blocks, optionally on its first ``in_channels`` input channels only
    (``conv(cat(x, zeros))`` without the zeros: the first stage's recurrent input).

    Plain ``F.conv2d``. (A CPU weight gradient by batched GEMMs was dropped on 2026-12-01: with torch 2.14's
    oneDNN it made a SAPNet forward + backward on 12 patches of 100x100 slower, 3.8 s against 3.2 s.)
    """
    weight = conv.weight if in_channels is None else conv.weight[:, :in_channels]
    return F.conv2d(x, weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _inplace_ok() -> bool:
    """Whether activations may be updated in place: only when autograd is not recording (saved activations) and
    ``torch.jit.trace`` is not recording either (its check re-runs the trace under ``no_grad``, and the graphs
    must be the same)."""
    return not torch.is_grad_enabled() and not torch.jit.is_tracing()


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
