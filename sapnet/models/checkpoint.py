"""Saving and loading derain checkpoints: our own format and the public SAPNet / PReNet files.

Our format is a dict saved with ``torch.save``::

    {"format": "sapnet", "format_version": 1,
     "config": DerainNetConfig.to_dict(),      # plain Python types
     "state_dict": {name: tensor},             # no "module." prefix
     "metadata": {...}}                        # training metadata, plain Python types

Training checkpoints add entries (optimizer, scheduler, ...) beside these; :func:`load_model` ignores them.
The public reference checkpoints are plain state dicts (SAPNet's with a ``module.`` prefix from
``DataParallel``); their names are mapped to ours.
Every file is read with ``torch.load(..., weights_only=True)`` and loaded strictly.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sapnet.models.derain_net import DerainNet, DerainNetConfig

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointError",
    "convert_reference_state_dict",
    "load_checkpoint",
    "load_model",
    "load_weights",
    "save_model",
]

FORMAT = "sapnet"
FORMAT_VERSION = 1
_MAX_LISTED = 8


class CheckpointError(RuntimeError):
    """A file that is not a readable derain checkpoint, or whose weights do not fit the model."""


@dataclass
class Checkpoint:
    """A checkpoint read from disk, in our naming.

    Attributes:
        config: the network configuration the weights belong to.
        state_dict: weights with our parameter names (no ``module.`` prefix).
        metadata: training metadata (empty for the public reference files).
        source: ``"sapnet"`` (our format), ``"sapnet-reference"`` or ``"prenet-reference"``.
        path: the file it was read from.
    """

    config: DerainNetConfig
    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = FORMAT
    path: Path | None = None


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    more = len(names) - _MAX_LISTED
    return shown + (f", ... ({more} more)" if more > 0 else "")


def _check_plain(value: Any, where: str) -> None:
    """Raise ``TypeError`` unless ``value`` is made of types that ``weights_only`` loading accepts.

    Exact types are required: subclasses (``IntEnum``, ``Counter``, ``OrderedDict`` of objects, ...) would be
    pickled by class and then refused when loading.
    """
    if value is None or type(value) in (bool, int, float, str) or isinstance(value, torch.Tensor):
        return
    if type(value) in (list, tuple):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    if type(value) is dict:
        for k, v in value.items():
            if type(k) is not str:
                raise TypeError(f"{where}: dict keys must be str, got {type(k).__name__}")
            _check_plain(v, f"{where}[{k!r}]")
        return
    raise TypeError(
        f"{where} is a {type(value).__name__}; checkpoint metadata may only hold None, bool, int, float, str, "
        "tensors, and lists / tuples / str-keyed dicts of these (exact types, not subclasses)"
    )


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename it over ``path``.

    A crash during saving leaves any previous file at ``path`` intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_model(model: DerainNet, path: str | os.PathLike[str], **metadata: Any) -> Path:
    """Save ``model``'s weights and config in our format, with ``metadata`` (plain Python values).

    The write is atomic. Parameters are stored on the CPU, without any ``module.`` / ``_orig_mod.`` prefix
    (``DataParallel``, ``DistributedDataParallel`` and ``torch.compile`` wrappers are unwrapped).

    Returns:
        The path written.
    """
    net = unwrap_model(model)
    if not isinstance(net, DerainNet):
        raise TypeError(f"save_model expects a DerainNet, got {type(net).__name__}")
    _check_plain(metadata, "metadata")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": net.config.to_dict(),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()},
        "metadata": metadata,
    }
    return atomic_save(payload, path)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """Strip ``DataParallel`` / ``DistributedDataParallel`` (``.module``) and ``torch.compile``
    (``._orig_mod``) wrappers."""
    while True:
        if isinstance(model, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, torch.nn.Module):
            model = model._orig_mod
        else:
            return model


# --- reference checkpoints ---------------------------------------------------------------------------

_LSTM_GATES = {
    "conv_i": "input_gate",
    "conv_f": "forget_gate",
    "conv_g": "cell_gate",
    "conv_o": "output_gate",
}
_CRA_NAMES = {"conv_du.0": "reduce", "conv_du.2": "expand", "conv_1_1": "skip"}


def _reference_kind(keys: set[str]) -> str | None:
    if not {"conv0.0.weight", "conv.0.weight", "res_conv1.0.weight"} <= keys:
        return None
    if "res_conv1.1.conv_du.0.weight" in keys:
        return "sapnet-reference"
    if "res_conv1.2.weight" in keys:
        return "prenet-reference"
    return None


def convert_reference_state_dict(
    state_dict: Mapping[str, torch.Tensor], stages: int = 6
) -> tuple[DerainNetConfig, dict[str, torch.Tensor], str]:
    """Map a public SAPNet or PReNet state dict to our names and infer its config.

    Args:
        state_dict: the reference ``state_dict`` (a ``module.`` prefix is removed).
        stages: number of stages (not stored in the reference files; both papers use 6).

    Returns:
        ``(config, state_dict, source)`` with ``source`` ``"sapnet-reference"`` or ``"prenet-reference"``.

    Raises:
        CheckpointError: the keys are not those of a reference SAPNet / PReNet (LSTM) network.
    """
    sd = dict(state_dict)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    kind = _reference_kind(set(sd))
    if kind is None:
        raise CheckpointError(
            "keys are not those of a SAPNet or PReNet (LSTM) reference checkpoint; found: " + _listing(sorted(sd))
        )
    sapnet = kind == "sapnet-reference"
    blocks = sorted({int(m.group(1)) for k in sd if (m := re.match(r"res_conv(\d+)\.", k))})
    if blocks != list(range(1, len(blocks) + 1)):
        raise CheckpointError(f"residual blocks are not numbered 1..K: found res_conv{blocks}")
    base_dilations = (1, 2, 4, 8, 16, 32, 64, 128)
    if len(blocks) > len(base_dilations):
        raise CheckpointError(f"{len(blocks)} residual blocks: the reference networks have at most 5")
    channels = sd["conv0.0.weight"].shape[0]
    config = DerainNetConfig(
        stages=stages,
        channels=channels,
        dilations=base_dilations[: len(blocks)] if sapnet else (1,) * len(blocks),
        attention=sapnet,
        recurrent="lstm",
    )

    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(src: str, dst: str) -> None:
        for suffix in ("weight", "bias"):
            key = f"{src}.{suffix}"
            if key in sd:
                out[f"{dst}.{suffix}"] = sd[key]
                used.add(key)

    take("conv0.0", "input_conv")
    take("conv.0", "output_conv")
    for ref, ours in _LSTM_GATES.items():
        take(f"{ref}.0", f"cell.{ours}")
    for k in blocks:
        src, dst = f"res_conv{k}", f"blocks.{k - 1}"
        if sapnet:
            take(f"{src}.0", f"{dst}.conv1")
            take(f"{src}.3", f"{dst}.conv2")
            for idx, attn in (("1", "attn1"), ("4", "attn2")):
                for ref, ours in _CRA_NAMES.items():
                    take(f"{src}.{idx}.{ref}", f"{dst}.{attn}.{ours}")
        else:
            take(f"{src}.0", f"{dst}.conv1")
            take(f"{src}.2", f"{dst}.conv2")
    unused = sorted(set(sd) - used)
    if unused:
        raise CheckpointError(f"unexpected keys for a {kind} checkpoint: {_listing(unused)}")
    return config, out, kind


# --- loading -------------------------------------------------------------------------------------------


def _torch_load(path: Path) -> Any:
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated / foreign / unsafe files
        text = str(e)
        if "weights_only" in text or "Unsupported global" in text:
            reason = "it holds Python objects that are not plain weights (refused by weights_only=True loading)"
        elif isinstance(e, (KeyError, EOFError)) or not text.strip() or path.stat().st_size == 0:
            reason = f"{type(e).__name__} while unpickling: the file is empty, truncated or not a torch.save() file"
        else:
            reason = f"{type(e).__name__}: {text.strip().splitlines()[0]}"
        raise CheckpointError(
            f"{path}: cannot be read as a PyTorch checkpoint ({reason}); is the file complete and a torch.save() file?"
        ) from e


def load_checkpoint(path: str | os.PathLike[str], stages: int = 6) -> Checkpoint:
    """Read a checkpoint file of any supported kind into our naming (on the CPU).

    Args:
        path: our format, the public SAPNet file (``module.`` prefix) or a public PReNet file.
        stages: stage count for the reference files, which do not record it.

    Raises:
        CheckpointError: missing, truncated or foreign file, naming the file and what did not match.
    """
    path = Path(path)
    obj = _torch_load(path)
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        version = obj.get("format_version")
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"{path}: sapnet checkpoint format version {version!r}, this sapnet reads {FORMAT_VERSION}"
            )
        try:
            config = DerainNetConfig.from_dict(dict(obj["config"]))
            state_dict = dict(obj["state_dict"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: malformed sapnet checkpoint ({e})") from e
        return Checkpoint(config, state_dict, dict(obj.get("metadata") or {}), FORMAT, path)
    if (
        isinstance(obj, Mapping)
        and obj
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        try:
            config, state_dict, source = convert_reference_state_dict(obj, stages=stages)
        except CheckpointError as e:
            raise CheckpointError(f"{path}: not a SAPNet/PReNet checkpoint: {e}") from None
        return Checkpoint(config, state_dict, {}, source, path)
    kind = type(obj).__name__
    if isinstance(obj, Mapping):
        kind += " with keys " + _listing(sorted(map(str, obj)))
    raise CheckpointError(
        f"{path}: not a derain checkpoint: expected a sapnet checkpoint or a SAPNet/PReNet state dict, found a {kind}"
    )


def load_weights(model: DerainNet, checkpoint: Checkpoint) -> DerainNet:
    """Load ``checkpoint``'s weights into ``model`` strictly, explaining any mismatch."""
    where = str(checkpoint.path) if checkpoint.path else "checkpoint"
    if checkpoint.config != model.config:
        ours, theirs = model.config.to_dict(), checkpoint.config.to_dict()
        diff = ", ".join(f"{k}: model {ours[k]!r} vs file {theirs[k]!r}" for k in ours if ours[k] != theirs[k])
        raise CheckpointError(f"{where}: the weights belong to a different network ({diff})")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(checkpoint.state_dict))
    unexpected = sorted(set(checkpoint.state_dict) - set(expected))
    shapes = sorted(
        f"{k}: model {tuple(expected[k].shape)} vs file {tuple(v.shape)}"
        for k, v in checkpoint.state_dict.items()
        if k in expected and expected[k].shape != v.shape
    )
    problems = []
    if missing:
        problems.append("missing " + _listing(missing))
    if unexpected:
        problems.append("unexpected " + _listing(unexpected))
    if shapes:
        problems.append("shape mismatch " + _listing(shapes))
    if problems:
        raise CheckpointError(f"{where}: weights do not fit the model: " + "; ".join(problems))
    model.load_state_dict(checkpoint.state_dict, strict=True)
    model.source, model.metadata = checkpoint.source, dict(checkpoint.metadata)
    return model


def load_model(path: str | os.PathLike[str], *, device: torch.device | str | None = None, stages: int = 6) -> DerainNet:
    """Build the network stored in ``path`` and load its weights; returned in eval mode.

    Args:
        path: our checkpoint format, the public SAPNet checkpoint or a public PReNet checkpoint.
        device: where to put the model (default: CPU).
        stages: stage count for the public files, which do not record it (default 6, as published).

    Raises:
        CheckpointError: unreadable, truncated or foreign file, or weights that do not fit.
    """
    ckpt = load_checkpoint(path, stages=stages)
    model = load_weights(DerainNet(ckpt.config), ckpt)
    if device is not None:
        model.to(device)
    return model.eval()
