"""The recurrent progressive derain network shared by SAPNet and PReNet."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, overload

import torch
from torch import nn

from sapnet.models.blocks import ConvGRUCell, ConvLSTMCell, RecurrentState, ResidualBlock, conv_same

__all__ = ["DerainNet", "DerainNetConfig", "RecurrentKind"]

RecurrentKind = Literal["lstm", "gru", "none"]


@dataclass(frozen=True)
class DerainNetConfig:
    """Hyper-parameters of :class:`DerainNet`.

    Attributes:
        stages: number of recurrent stages T (both papers: 6).
        channels: feature channels (both papers: 32).
        dilations: dilation rate of each residual block; its length is the number of blocks
            (SAPNet: 1, 2, 4, 8, 16; PReNet: 1, 1, 1, 1, 1).
        attention: channel residual attention after each 3x3 conv of the residual blocks (SAPNet: on).
        recurrent: the cell that carries state across stages: ``"lstm"`` (both papers), ``"gru"`` or
            ``"none"``.
        attention_reduction: CRA bottleneck ratio (32 channels -> 2).
    """

    stages: int = 6
    channels: int = 32
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16)
    attention: bool = True
    recurrent: RecurrentKind = "lstm"
    attention_reduction: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "dilations", tuple(int(d) for d in self.dilations))
        if self.stages < 1:
            raise ValueError(f"stages must be >= 1, got {self.stages}")
        if self.channels < 1:
            raise ValueError(f"channels must be >= 1, got {self.channels}")
        if not self.dilations or any(d < 1 for d in self.dilations):
            raise ValueError(f"dilations must be a non-empty sequence of positive ints, got {self.dilations}")
        if self.recurrent not in ("lstm", "gru", "none"):
            raise ValueError(f"recurrent must be 'lstm', 'gru' or 'none', got {self.recurrent!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (lists instead of tuples), safe for ``torch.save`` / JSON / YAML."""
        d = asdict(self)
        d["dilations"] = list(self.dilations)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DerainNetConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown DerainNetConfig keys {unknown}; known keys are {sorted(known)}")
        return cls(**d)


class DerainNet(nn.Module):
    """Recurrent progressive derain network (SAPNet, PReNet and their variants).

    Each of the T stages computes, from the rainy input ``x0`` and the previous estimate ``x``
    (``x = x0`` before the first stage)::

        z = relu(input_conv(cat(x0, x)))          # 3x3, 6 -> C
        z, state = cell(z, state)                 # ConvLSTM / ConvGRU / identity
        z = relu(block_k(z) + z)   for k = 1..K   # residual blocks, dilation d_k, optional CRA
        x = output_conv(z) + x0                   # 3x3, C -> 3; not clamped

    Input: (N, 3, H, W) float RGB in [0, 1], any H and W. Output: the final estimate (N, 3, H, W) in the input's
    dtype (roughly [0, 1], not clamped). The recurrent state starts at zero and is created from the features,
    so it follows the input's device, dtype and memory format.
    """

    def __init__(self, config: DerainNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or DerainNetConfig()
        self.source: str | None = None
        """Where the weights came from (set by :func:`sapnet.load_model`): ``"sapnet"``, ``"sapnet-reference"``,
        ``"prenet-reference"``, or ``None`` for a freshly initialised network."""
        self.metadata: dict[str, Any] = {}
        """Metadata stored with the weights (training settings, epochs, ...)."""
        c = config.channels
        self.input_conv = nn.Conv2d(6, c, 3, padding=1)
        self.cell: ConvLSTMCell | ConvGRUCell | None
        if config.recurrent == "lstm":
            self.cell = ConvLSTMCell(c)
        elif config.recurrent == "gru":
            self.cell = ConvGRUCell(c)
        else:
            self.cell = None
        self.blocks = nn.ModuleList(
            ResidualBlock(c, d, config.attention, config.attention_reduction) for d in config.dilations
        )
        self.output_conv = nn.Conv2d(c, 3, 3, padding=1)

    @overload
    def forward(self, x: torch.Tensor, return_stages: Literal[False] = ...) -> torch.Tensor: ...

    @overload
    def forward(self, x: torch.Tensor, return_stages: Literal[True]) -> tuple[torch.Tensor, list[torch.Tensor]]: ...

    def forward(
        self, x: torch.Tensor, return_stages: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Derain ``x`` (N, 3, H, W) float in [0, 1].

        Returns the final estimate (N, 3, H, W), or ``(final, stages)`` with the list of the T stage outputs
        (the last one is ``final``) when ``return_stages`` is true.
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected input of shape (N, 3, H, W), got {tuple(x.shape)}")
        x0 = x
        state: RecurrentState | None = None
        stages: list[torch.Tensor] = []
        for _ in range(self.config.stages):
            z = self.input_conv(torch.cat((x0, x), dim=1)).relu_()
            if self.cell is not None:
                z, state = self.cell(z, state)
            for block in self.blocks:
                z = (block(z) + z).relu_()
            x = conv_same(self.output_conv, z) + x0
            stages.append(x)
        return (x, stages) if return_stages else x

    def extra_repr(self) -> str:
        cfg = self.config
        return (
            f"stages={cfg.stages}, channels={cfg.channels}, dilations={cfg.dilations}, "
            f"attention={cfg.attention}, recurrent={cfg.recurrent!r}"
        )
