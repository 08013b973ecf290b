"""Saving and loading derain checkpoints: our own format and the public SAPNet / PReNet files.

Our format is a dict saved with ``torch.save``::

    {"format": "sapnet", "format_version": 1,
     "config": DerainNetConfig.to_dict(),      # plain Python types
     "state_dict": {name: tensor},             # no "module." prefix
     "metadata": {...}}                        # training metadata, plain Python types

Training checkpoints (:func:`save_training_state`) add a ``"training"`` entry (optimiser, scheduler, RNG states,
...) beside these; :func:`sapnet.load_model` ignores it and :func:`load_training_state` returns it.
The public reference checkpoints are plain state dicts (SAPNet's with a ``module.`` prefix from
``DataParallel``); their names are mapped to ours.
Every file is read with ``torch.load(..., weights_only=True)`` and loaded strictly.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sapnet.data.listing import summarise
from sapnet.files import atomic_write
from sapnet.models.derain_net import DerainNet, DerainNetConfig, RecurrentKind

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointError",
    "convert_reference_state_dict",
    "load_checkpoint",
    "load_training_state",
    "load_weights",
    "save_model",
    "save_training_state",
]

FORMAT = "sapnet"
FORMAT_VERSION = 1


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

    A crash during saving leaves any previous file at ``path`` intact. The file gets the usual mode under the
    umask (like any file written with ``open()``), not the ``0600`` of the temporary file.
    """
    path = Path(path)
    with atomic_write(path, fsync=True) as tmp, tmp.open("wb") as f:
        torch.save(obj, f)
    return path


def _payload(model: torch.nn.Module, metadata: dict[str, Any]) -> dict[str, Any]:
    """Our format's dict for ``model`` (unwrapped, weights on the CPU) and ``metadata`` (checked plain)."""
    net = unwrap_model(model)
    if not isinstance(net, DerainNet):
        raise TypeError(f"expected a DerainNet, got {type(net).__name__}")
    _check_plain(metadata, "metadata")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": net.config.to_dict(),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()},
        "metadata": metadata,
    }


def save_model(model: DerainNet, path: str | os.PathLike[str], **metadata: Any) -> Path:
    """Save ``model``'s weights and config in our format, with ``metadata`` (plain Python values).

    The write is atomic. Parameters are stored on the CPU, without any ``module.`` / ``_orig_mod.`` prefix
    (``DataParallel``, ``DistributedDataParallel`` and ``torch.compile`` wrappers are unwrapped).

    Returns:
        The path written.
    """
    return atomic_save(_payload(model, metadata), path)


def save_training_state(
    model: DerainNet, path: str | os.PathLike[str], training: Mapping[str, Any], **metadata: Any
) -> Path:
    """:func:`save_model` plus a ``"training"`` entry: what a trainer needs to continue (optimiser, scheduler
    and RNG states, counters, ...), made of tensors, numbers, strings, lists and dicts only (``weights_only``
    loading must accept it). The file stays loadable by :func:`sapnet.load_model`.

    Returns:
        The path written.
    """
    payload = _payload(model, metadata)
    payload["training"] = dict(training)
    return atomic_save(payload, path)


def load_training_state(path: str | os.PathLike[str]) -> tuple[Checkpoint, dict[str, Any]]:
    """Read a file written by :func:`save_training_state` (on the CPU).

    Returns:
        ``(checkpoint, training)``: the model part as :func:`load_checkpoint` reads it and the ``"training"`` dict.

    Raises:
        CheckpointError: unreadable file, not our format, or no training state (e.g. a released model file).
    """
    path = Path(path)
    obj = _torch_load(path)
    checkpoint = _sapnet_checkpoint(obj, path) if isinstance(obj, Mapping) and obj.get("format") == FORMAT else None
    if checkpoint is None or not isinstance(obj.get("training"), Mapping):
        raise CheckpointError(f"{path}: not a sapnet training checkpoint (no 'training' state to resume from)")
    return checkpoint, dict(obj["training"])


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

_LSTM_GATES = {"conv_i": "input_gate", "conv_f": "forget_gate", "conv_g": "cell_gate", "conv_o": "output_gate"}
_GRU_GATES = {"conv_z": "update_gate", "conv_b": "reset_gate", "conv_g": "candidate"}
_CRA_NAMES = {"conv_du.0": "reduce", "conv_du.2": "expand", "conv_1_1": "skip"}
_REFERENCE_BLOCKS = 5
"""Residual blocks of every reference network; a file with only ``res_conv1`` applies it this many times."""

TOPOLOGY_FIELDS = ("stages", "input_skip", "cell_position")
"""The :class:`DerainNetConfig` fields that a reference state dict does not reveal (same keys, other function)."""


def _reference_kind(keys: set[str]) -> str | None:
    if not {"conv0.0.weight", "conv.0.weight", "res_conv1.0.weight"} <= keys:
        return None
    if "res_conv1.1.conv_du.0.weight" in keys:
        return "sapnet-reference"
    if "res_conv1.2.weight" in keys:
        return "prenet-reference"
    return None


def convert_reference_state_dict(
    state_dict: Mapping[str, torch.Tensor], stages: int = 6, config: DerainNetConfig | None = None
) -> tuple[DerainNetConfig, dict[str, torch.Tensor], str]:
    """Map a public SAPNet or PReNet-family state dict to our names and infer its config.

    What the keys show is read from them: SAPNet or PReNet blocks, the recurrent cell (ConvLSTM ``conv_i/f/g/o``,
    ConvGRU ``conv_z/b/g``, none: PRN), one shared block (``res_conv1`` only: PReNet_r, PRN_r) and a 3-channel
    input convolution (PReNet_x). The authors' GRU and PReNet_x networks have no input skip, so neither does
    the inferred config. What the keys cannot show (:data:`TOPOLOGY_FIELDS`: stage count, input skip, cell
    before or after the blocks) is taken from ``config`` when given (e.g. a registry entry identified by the
    file's hash), else defaults to the published PReNet / SAPNet (``stages``, skip on, cell before).

    Args:
        state_dict: the reference ``state_dict`` (a ``module.`` prefix is removed).
        stages: number of stages when ``config`` is not given (not stored in the files; both papers use 6).
        config: the network the file is known to encode; it must agree with what the keys show.

    Returns:
        ``(config, state_dict, source)`` with ``source`` ``"sapnet-reference"`` or ``"prenet-reference"``.

    Raises:
        CheckpointError: the keys are not those of a reference network, or disagree with ``config``.
    """
    sd = dict(state_dict)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    keys = set(sd)
    kind = _reference_kind(keys)
    if kind is None:
        raise CheckpointError(
            "keys are not those of a SAPNet or PReNet-family reference checkpoint; found: " + summarise(map(str, sd))
        )
    sapnet = kind == "sapnet-reference"
    blocks = sorted({int(m.group(1)) for k in sd if (m := re.match(r"res_conv(\d+)\.", k))})
    if blocks != list(range(1, len(blocks) + 1)):
        raise CheckpointError(f"residual blocks are not numbered 1..K: found res_conv{blocks}")
    base_dilations = (1, 2, 4, 8, 16, 32, 64, 128)
    if len(blocks) > len(base_dilations):
        raise CheckpointError(f"{len(blocks)} residual blocks: the reference networks have at most 5")
    shared = len(blocks) == 1 and not sapnet
    uses = _REFERENCE_BLOCKS if shared else len(blocks)
    recurrent: RecurrentKind
    if "conv_i.0.weight" in keys:
        recurrent, gates = "lstm", _LSTM_GATES
    elif "conv_z.0.weight" in keys:
        recurrent, gates = "gru", _GRU_GATES
    else:
        recurrent, gates = "none", {}
    estimate_only = sd["conv0.0.weight"].shape[1] == 3
    inferred = DerainNetConfig(
        stages=stages,
        channels=sd["conv0.0.weight"].shape[0],
        dilations=base_dilations[:uses] if sapnet else (1,) * uses,
        attention=sapnet,
        recurrent=recurrent,
        shared_block=shared,
        input_skip=not (estimate_only or recurrent == "gru"),
        stage_input="estimate" if estimate_only else "concat",
    )
    if config is not None:
        shown = {k: v for k, v in inferred.to_dict().items() if k not in TOPOLOGY_FIELDS}
        wanted = config.to_dict()
        diff = [f"{k}: expected {wanted[k]!r}, the keys show {v!r}" for k, v in shown.items() if wanted[k] != v]
        if diff:
            raise CheckpointError("the weights are not those of the expected network (" + "; ".join(diff) + ")")
        inferred = config

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
    for ref, ours in gates.items():
        take(f"{ref}.0", f"cell.{ours}")
    if recurrent == "gru":
        # The reference candidate sees cat(reset * h, z); ours sees cat(z, reset * h): swap the input halves.
        w = out["cell.candidate.weight"]
        half = w.shape[1] // 2
        out["cell.candidate.weight"] = torch.cat((w[:, half:], w[:, :half]), dim=1)
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
        raise CheckpointError(f"unexpected keys for a {kind} checkpoint: {summarise(unused)}")
    return inferred, out, kind


# --- loading -------------------------------------------------------------------------------------------


def _looks_like_torch_file(path: Path) -> bool:
    """Whether ``path`` starts like a ``torch.save`` file: a zip archive (maybe truncated) or a pickle (protocol
    >= 2, the legacy format)."""
    with path.open("rb") as f:
        head = f.read(4)
    return head == b"PK\x03\x04" or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def _torch_load(path: Path) -> Any:
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated / foreign / unsafe files
        text = str(e)
        if path.stat().st_size > 0 and not _looks_like_torch_file(path):
            raise CheckpointError(
                f"{path}: not a PyTorch checkpoint file (neither a zip archive nor a pickle, as torch.save() writes)"
            ) from e
        if "weights_only" in text or "Unsupported global" in text:
            reason = "it holds Python objects that are not plain weights (refused by weights_only=True loading)"
        elif isinstance(e, (KeyError, EOFError)) or not text.strip() or path.stat().st_size == 0:
            reason = f"{type(e).__name__} while unpickling: the file is empty, truncated or not a torch.save() file"
        else:
            reason = f"{type(e).__name__}: {text.strip().splitlines()[0]}"
        raise CheckpointError(
            f"{path}: cannot be read as a PyTorch checkpoint ({reason}); is the file complete and a torch.save() file?"
        ) from e


def _sapnet_checkpoint(obj: Mapping[str, Any], path: Path) -> Checkpoint:
    """The :class:`Checkpoint` in a dict of our format (version and config checked)."""
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


def load_checkpoint(
    path: str | os.PathLike[str], stages: int = 6, reference_config: DerainNetConfig | None = None
) -> Checkpoint:
    """Read a checkpoint file of any supported kind into our naming (on the CPU).

    Args:
        path: our format, the public SAPNet file (``module.`` prefix) or a public PReNet-family file.
        stages: stage count for the reference files, which do not record it (ignored with ``reference_config``).
        reference_config: for a reference file, the network it is known to encode (see
            :func:`convert_reference_state_dict`); ``None``: inferred from its keys.

    Raises:
        CheckpointError: missing, truncated or foreign file, naming the file and what did not match.
    """
    path = Path(path)
    obj = _torch_load(path)
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        return _sapnet_checkpoint(obj, path)
    if (
        isinstance(obj, Mapping)
        and obj
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        try:
            config, state_dict, source = convert_reference_state_dict(obj, stages=stages, config=reference_config)
        except CheckpointError as e:
            raise CheckpointError(f"{path}: not a SAPNet/PReNet checkpoint: {e}") from None
        return Checkpoint(config, state_dict, {}, source, path)
    kind = type(obj).__name__
    if isinstance(obj, Mapping):
        kind += " with keys " + summarise(map(str, obj))
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
        problems.append("missing " + summarise(missing))
    if unexpected:
        problems.append("unexpected " + summarise(unexpected))
    if shapes:
        problems.append("shape mismatch " + summarise(shapes))
    if problems:
        raise CheckpointError(f"{where}: weights do not fit the model: " + "; ".join(problems))
    model.load_state_dict(checkpoint.state_dict, strict=True)
    model.source, model.metadata = checkpoint.source, dict(checkpoint.metadata)
    return model
