"""The recurrent progressive derain network shared by SAPNet and PReNet."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal, overload

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from sapnet.models.blocks import ConvGRUCell, ConvLSTMCell, RecurrentState, ResidualBlock, conv_same

__all__ = ["CellPosition", "DerainNet", "DerainNetConfig", "RecurrentKind", "StageInput", "keep_unchanged"]

RecurrentKind = Literal["lstm", "gru", "none"]
CellPosition = Literal["before", "after"]
StageInput = Literal["concat", "estimate"]


def keep_unchanged(rainy: torch.Tensor, restored: torch.Tensor, threshold: float) -> torch.Tensor:
    """``restored`` with ``rainy``'s own pixels put back wherever the restoration changed no channel by more than
    ``threshold``.

    Rain adds bright streaks; where a derain network changed a pixel only a little, the pixel was most likely
    rain-free and the change is smoothing of the photo's texture, which no-reference metrics penalise and
    synthetic benchmarks count as error. Measured with ``prenet.rain100h`` (``benchmarks/keep_input.py``,
    2026-12-01): on Rain100L's 100 test pairs threshold 0.02 raises Y-PSNR from 34.89 to 35.20 dB but lowers
    Y-SSIM from 0.9707 to 0.9650 (faint rain under the threshold is kept too); on the 20 SIRR photos that choose
    ``best.pt`` in real-rain adaptation (at most 1024 px) it lowers mean BRISQUE from 22.08 to 20.48 and NIQE from
    3.632 to 3.460. At 0.08 it keeps visible rain (Rain100L 33.71 dB).

    Args:
        rainy: (..., 3, H, W) float in [0, 1].
        restored: the same shape as ``rainy``, float.
        threshold: in (0, 1), on the [0, 1] scale (0.02 is about 5 levels of 8 bits).

    Returns:
        The same shape and dtype as ``restored``.

    Raises:
        ValueError: another shape, or a threshold outside (0, 1).

    Example:
        >>> import torch
        >>> x = torch.tensor([0.5, 0.9]).view(1, 1, 2).expand(3, 1, 2)
        >>> keep_unchanged(x, torch.full((3, 1, 2), 0.49), 0.02)[0]
        tensor([[0.5000, 0.4900]])
    """
    if rainy.shape != restored.shape:
        raise ValueError(f"keep_unchanged: rainy {tuple(rainy.shape)} and restored {tuple(restored.shape)} differ")
    if not 0 < threshold < 1:
        raise ValueError(f"keep_unchanged: threshold {threshold} is outside (0, 1)")
    diff = rainy.to(restored.dtype) - restored
    unchanged = diff.abs().amax(dim=-3, keepdim=True) <= threshold
    return restored + unchanged.to(restored.dtype) * diff


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
        shared_block: one residual block, its weights shared, applied ``len(dilations)`` times (PReNet_r and
            PRN_r, the authors' "intra-stage recursive" variants); all dilations must then be equal.
        input_skip: each stage predicts a residual added to the rainy input, ``x = output_conv(z) + x0``
            (both papers); ``False``: the stage predicts the image itself, ``x = output_conv(z)``
            (PReNet's ablations and real-rain models).
        cell_position: where the recurrent cell sits in a stage: ``"before"`` the residual blocks (both papers)
            or ``"after"`` them (PReNet's real-rain ``Generator_lstm``).
        stage_input: what the input convolution sees: ``"concat"`` the rainy input and the previous estimate
            (6 channels, both papers) or only the previous ``"estimate"`` (3 channels, PReNet's ablation
            ``PReNet_x``).
        keep_input: a threshold in (0, 1), or ``None``: the final estimate's pixels that differ from the rainy
            input by at most this in every channel are returned as the input's own (:func:`keep_unchanged`;
            ``sapnet.real``: 0.02); the stage outputs before the last are left as they are.
    """

    stages: int = 6
    channels: int = 32
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16)
    attention: bool = True
    recurrent: RecurrentKind = "lstm"
    attention_reduction: int = 16
    shared_block: bool = False
    input_skip: bool = True
    cell_position: CellPosition = "before"
    stage_input: StageInput = "concat"
    keep_input: float | None = None

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
        if self.cell_position not in ("before", "after"):
            raise ValueError(f"cell_position must be 'before' or 'after', got {self.cell_position!r}")
        if self.stage_input not in ("concat", "estimate"):
            raise ValueError(f"stage_input must be 'concat' or 'estimate', got {self.stage_input!r}")
        if self.keep_input is not None and not 0 < self.keep_input < 1:
            raise ValueError(f"keep_input must be in (0, 1) or None, got {self.keep_input}")
        if self.shared_block and len(set(self.dilations)) != 1:
            raise ValueError(f"shared_block=True needs one dilation for all uses of the block, got {self.dilations}")

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


class DerainNet(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="sapnet",
    tags=["image-deraining", "image-restoration"],
    pipeline_tag="image-to-image",
):
    """Recurrent progressive derain network (SAPNet, PReNet and their variants).

    Each of the T stages computes, from the rainy input ``x0`` and the previous estimate ``x``
    (``x = x0`` before the first stage)::

        z = relu(input_conv(cat(x0, x)))          # 3x3, 6 -> C   (stage_input="estimate": input_conv(x), 3 -> C)
        z, state = cell(z, state)                 # ConvLSTM / ConvGRU / identity (cell_position="after": below)
        z = relu(block_k(z) + z)   for k = 1..K   # residual blocks, dilation d_k, optional CRA (or one shared)
        x = output_conv(z) + x0                   # 3x3, C -> 3; not clamped (input_skip=False: no "+ x0")

    and with ``keep_input`` set, the final ``x`` takes ``x0``'s value wherever it differs from it by at most that.

    Input: (N, 3, H, W) float RGB in [0, 1], any H and W. Output: the final estimate (N, 3, H, W) in the input's
    dtype (roughly [0, 1], not clamped). The recurrent state starts at zero and is created from the features,
    so it follows the input's device, dtype and memory format; :meth:`forward_with_state` starts it from a given
    state instead and returns the last one (a video frame started from the previous frame's state).

    Shared like smp / timm models through ``huggingface_hub``: ``save_pretrained(folder)`` writes
    ``config.json`` (the :class:`DerainNetConfig`) and ``model.safetensors``; ``DerainNet.from_pretrained(folder
    or "user/repo")`` reads them back strictly; ``push_to_hub("user/repo")`` uploads them.
    """

    def __init__(self, config: DerainNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or DerainNetConfig()
        self._hub_mixin_config = config  # what save_pretrained writes to config.json
        self.source: str | None = None
        """Where the weights came from (set by :func:`sapnet.load_model`): ``"sapnet"``, ``"sapnet-reference"``,
        ``"prenet-reference"``, or ``None`` for a freshly initialised network."""
        self.metadata: dict[str, Any] = {}
        """Metadata stored with the weights (training settings, epochs, ...)."""
        c = config.channels
        self.input_conv = nn.Conv2d(6 if config.stage_input == "concat" else 3, c, 3, padding=1)
        self.cell: ConvLSTMCell | ConvGRUCell | None
        if config.recurrent == "lstm":
            self.cell = ConvLSTMCell(c)
        elif config.recurrent == "gru":
            self.cell = ConvGRUCell(c)
        else:
            self.cell = None
        unique = config.dilations[:1] if config.shared_block else config.dilations
        self.blocks = nn.ModuleList(ResidualBlock(c, d, config.attention, config.attention_reduction) for d in unique)
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
        (the last one is ``final``) when ``return_stages`` is true. The recurrent state starts at zero.
        """
        x, stages, _ = self._run(x, None)
        return (x, stages) if return_stages else x

    def forward_with_state(
        self, x: torch.Tensor, state: RecurrentState | None = None
    ) -> tuple[torch.Tensor, RecurrentState]:
        """Derain ``x`` (N, 3, H, W) float in [0, 1] with the first stage's cell starting from ``state``.

        ``state``: ``(h, c)`` for the LSTM cell, ``(h,)`` for the GRU cell, each float (N, C, H, W) (C =
        ``config.channels``, the input's resolution, on its device); ``None``: zeros, exactly as :meth:`forward`
        (the same values). Returns ``(final, state)``: the final estimate (N, 3, H, W) and the cell's state after
        the last stage, in the same form, e.g. to start the next frame of a video from
        (:class:`sapnet.video.RecurrentDerainer`); ``state`` itself is left unchanged. Traceable like
        :meth:`forward` (``torch.jit.trace`` or the ONNX exporter on a module that calls it). ``ValueError`` for a
        network without a recurrent cell (``config.recurrent == "none"``) or a state of the wrong form.
        """
        if self.cell is None:
            raise ValueError("this network has no recurrent cell (config.recurrent is 'none'): it carries no state")
        if state is not None:
            self.check_state(state, x)
            if len(state) == 2:  # the LSTM cell updates its cell state in place (without autograd): not the caller's
                state = (state[0], state[1].clone())
        x, _, final = self._run(x, state)
        assert final is not None  # a network with a cell always leaves a state
        return x, final

    def check_state(self, state: RecurrentState, x: torch.Tensor) -> None:
        """``ValueError`` unless ``state`` is a recurrent state this network can start from for input ``x``
        (N, 3, H, W): a tuple of 2 (LSTM) or 1 (GRU) float tensors of shape (N, C, H, W)."""
        expected = 2 if isinstance(self.cell, ConvLSTMCell) else 1
        shape = (x.shape[0], self.config.channels, *x.shape[-2:])
        if not isinstance(state, tuple) or len(state) != expected:
            kind = "(h, c)" if expected == 2 else "(h,)"
            raise ValueError(f"the {self.config.recurrent} cell's state is a tuple {kind}, got {type(state).__name__}")
        for t in state:
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape or not t.is_floating_point():
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"state tensors must be float of shape {shape} for this input, got {got}")

    def _run(
        self, x: torch.Tensor, state: RecurrentState | None
    ) -> tuple[torch.Tensor, list[torch.Tensor], RecurrentState | None]:
        """The T stages from the cell state ``state`` (``None``: zero): (final, stage outputs, final state)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected input of shape (N, 3, H, W), got {tuple(x.shape)}")
        cfg = self.config
        blocks = [self.blocks[0]] * len(cfg.dilations) if cfg.shared_block else list(self.blocks)
        cell_before = self.cell if cfg.cell_position == "before" else None
        cell_after = self.cell if cfg.cell_position == "after" else None
        x0 = x
        stages: list[torch.Tensor] = []
        for _ in range(cfg.stages):
            z = self.input_conv(torch.cat((x0, x), dim=1) if cfg.stage_input == "concat" else x).relu_()
            if cell_before is not None:
                z, state = cell_before(z, state)
            for block in blocks:
                z = (block(z) + z).relu_()
            if cell_after is not None:
                z, state = cell_after(z, state)
            x = conv_same(self.output_conv, z)
            if cfg.input_skip:
                x = x + x0
            stages.append(x)
        if cfg.keep_input is not None:
            x = stages[-1] = keep_unchanged(x0, x, cfg.keep_input)
        return x, stages, state

    def extra_repr(self) -> str:
        cfg = self.config
        text = (
            f"stages={cfg.stages}, channels={cfg.channels}, dilations={cfg.dilations}, "
            f"attention={cfg.attention}, recurrent={cfg.recurrent!r}"
        )
        defaults = DerainNetConfig()
        for name in ("shared_block", "input_skip", "cell_position", "stage_input", "keep_input"):
            if getattr(cfg, name) != getattr(defaults, name):
                text += f", {name}={getattr(cfg, name)!r}"
        return text

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        config: dict[str, Any] | DerainNetConfig | None = None,
        map_location: str = "cpu",
        **model_kwargs: Any,
    ) -> DerainNet:
        """Build the network of ``config.json`` and load ``model.safetensors`` strictly (readable errors)."""
        from huggingface_hub import constants, hf_hub_download
        from safetensors.torch import load_file

        from sapnet.models.checkpoint import Checkpoint, CheckpointError, load_weights

        if config is None:
            raise CheckpointError(f"{model_id}: no {constants.CONFIG_NAME}; not a folder written by save_pretrained")
        try:
            net_config = config if isinstance(config, DerainNetConfig) else DerainNetConfig.from_dict(dict(config))
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{model_id}: {constants.CONFIG_NAME} is not a DerainNetConfig ({e})") from None
        if os.path.isdir(model_id):
            weights = Path(model_id) / constants.SAFETENSORS_SINGLE_FILE
            if not weights.is_file():
                raise CheckpointError(f"{model_id}: no {constants.SAFETENSORS_SINGLE_FILE}")
        else:
            weights = Path(
                hf_hub_download(
                    repo_id=model_id,
                    filename=constants.SAFETENSORS_SINGLE_FILE,
                    revision=revision,
                    cache_dir=cache_dir,
                    force_download=force_download,
                    token=token,
                    local_files_only=local_files_only,
                )
            )
        try:
            state_dict = load_file(weights, device=map_location)
        except Exception as e:  # safetensors raises its own error types for foreign / truncated files
            raise CheckpointError(f"{weights}: not a readable safetensors file ({e})") from None
        model = cls(net_config)
        load_weights(model, Checkpoint(net_config, state_dict, source="sapnet", path=weights))
        return model.eval()
