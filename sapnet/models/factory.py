"""The one way from a name or a path to a model: :func:`create_model` and :func:`load_model`.

Every part of sapnet that turns a user's model argument into a network (``sapnet.derain``, ``evaluate.py``, the
downstream benchmark, the CLI, training) calls one of these two functions.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from sapnet.hub import file_sha256
from sapnet.models.checkpoint import Checkpoint, CheckpointError, load_checkpoint, load_weights
from sapnet.models.derain_net import DerainNet, DerainNetConfig
from sapnet.models.hub import weights_file
from sapnet.models.registry import find_weights_by_sha256, get_architecture, get_weights, split_name

__all__ = ["HF_HUB_PREFIX", "create_model", "load_model"]

HF_HUB_PREFIX = "hf-hub:"
"""``load_model("hf-hub:user/repo")`` reads a model shared with :meth:`DerainNet.push_to_hub`."""


def create_model(
    name: str,
    pretrained: bool = False,
    *,
    checkpoint_path: str | os.PathLike[str] | None = None,
    weights_dir: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> DerainNet:
    """Build a registry network, with fresh or published weights.

    Args:
        name: an architecture (``"prenet"``, see ``list_models()``) or ``arch.tag`` (``"prenet.rain100h"``, see
            ``list_models(pretrained=True)``); a tag also sets the network the weights need (e.g. its stages).
        pretrained: load the published weights of ``name`` (a bare architecture: its first entry); fetched from
            ``weights_dir`` / ``$SAPNET_WEIGHTS_DIR``, the cache or the URL (:func:`sapnet.models.hub.weights_file`).
            The model is then in eval mode. ``False``: freshly initialised, in train mode.
        checkpoint_path: instead, a checkpoint file to load into the network (ours or a public SAPNet / PReNet file).
        weights_dir: an offline mirror folder searched first for the published file.
        **overrides: :class:`DerainNetConfig` fields to change, e.g. ``stages=4`` or ``recurrent="gru"``.
            With weights, the file must still fit (``stages`` may change, a structural field may not).

    Raises:
        KeyError: unknown name (the message names the closest valid ones).
        sapnet.CheckpointError: weights that do not belong to this network, or that cannot be had offline.

    Examples:
        >>> model = create_model("sapnet", stages=2)  # fresh weights, train mode
        >>> model.config.stages, model.config.dilations, model.training
        (2, (1, 2, 4, 8, 16), True)
        >>> create_model("prenet.rain100h").config.stages  # a tag sets the network its weights need
        6
    """
    if pretrained and checkpoint_path is not None:
        raise ValueError("give pretrained=True or checkpoint_path, not both")
    arch = get_architecture(name)
    entry = get_weights(name) if pretrained or split_name(name)[1] is not None else None
    base = entry.config if entry is not None else arch.config
    config = DerainNetConfig.from_dict({**base.to_dict(), **overrides})
    model = DerainNet(config)
    if pretrained:
        assert entry is not None
        path = weights_file(entry, weights_dir=weights_dir)
        ckpt = load_checkpoint(path, reference_config=replace(entry.config, stages=config.stages))
        load_weights(model, ckpt).eval()
        model.metadata = {"registry_name": entry.name}
    elif checkpoint_path is not None:
        load_weights(model, _read_file(checkpoint_path, config.stages)).eval()
    return model


def _read_file(path: str | os.PathLike[str], stages: int | None) -> Checkpoint:
    """Read a checkpoint file; a public file identified by its SHA-256 in the registry gets that entry's network.

    ``stages`` runs a public file with that many stages (``None``: the registry's, else 6); our format keeps its own.
    """
    p = Path(path)
    entry = find_weights_by_sha256(file_sha256(p)) if p.is_file() else None
    known = entry.config if entry is not None else None
    if known is not None and stages is not None:
        known = replace(known, stages=stages)
    return load_checkpoint(p, stages=stages or 6, reference_config=known)


def load_model(
    name_or_path: str | os.PathLike[str],
    *,
    device: torch.device | str | None = None,
    stages: int | None = None,
    weights_dir: str | os.PathLike[str] | None = None,
) -> DerainNet:
    """A trained network from a registry name, a checkpoint file, a ``save_pretrained`` folder or the Hub.

    Args:
        name_or_path: ``arch.tag`` (``"prenet.rain100h"``) or an architecture (its default weights); a checkpoint
            file (our format, the public SAPNet file, any public PReNet-family file: a file whose SHA-256 is in
            the registry gets that entry's exact network, others are read from their keys); a folder written by
            :meth:`DerainNet.save_pretrained`; or ``"hf-hub:user/repo"``.
        device: where to put the model (default: CPU).
        stages: run a public file with this many stages (default: the registry's, else 6); ignored for our format.
        weights_dir: an offline mirror folder for registry weights (default ``$SAPNET_WEIGHTS_DIR``).

    Returns:
        The model in eval mode; ``model.source`` says what kind of file it came from.

    Raises:
        KeyError: neither a file nor a registry name (the message names the closest valid names).
        sapnet.CheckpointError: unreadable or foreign file, weights that do not fit, registry weights that
            cannot be had offline.

    Examples:
        >>> import os, tempfile
        >>> import sapnet
        >>> path = os.path.join(tempfile.mkdtemp(), "tiny.pt")
        >>> _ = sapnet.save_model(create_model("prenet", stages=2), path)
        >>> model = load_model(path)
        >>> model.config.stages, model.training
        (2, False)
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if isinstance(name_or_path, str) and text.startswith(HF_HUB_PREFIX):
        model = _from_hub(text[len(HF_HUB_PREFIX) :])
    elif path.is_dir():
        model = DerainNet.from_pretrained(path)
    elif path.is_file() or not isinstance(name_or_path, str) or not _is_name_like(text):
        ckpt = _read_file(path, stages)
        model = load_weights(DerainNet(ckpt.config), ckpt)
    else:
        try:
            get_weights(text)
        except KeyError as e:
            raise KeyError(f"{e.args[0]} (and there is no file or folder {text!r})") from None
        overrides: dict[str, Any] = {"stages": stages} if stages else {}
        model = create_model(text, pretrained=True, weights_dir=weights_dir, **overrides)
    if device is not None:
        model.to(device)
    return model.eval()


def _from_hub(repo_id: str) -> DerainNet:
    try:
        return DerainNet.from_pretrained(repo_id)
    except CheckpointError:
        raise
    except Exception as e:  # huggingface_hub's errors: offline, unknown repository, gated, bad id, ...
        raise CheckpointError(
            f"cannot load {HF_HUB_PREFIX}{repo_id} from the Hugging Face Hub ({type(e).__name__}: {e}); offline, "
            "use a folder written by save_pretrained instead"
        ) from None


CHECKPOINT_SUFFIXES = frozenset({".pth", ".pt", ".ckpt", ".bin", ".safetensors", ".tar", ".pkl"})
_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)?")


def _is_name_like(text: str) -> bool:
    """``arch`` or ``arch.tag`` in form (no separator, not a checkpoint file extension): a registry name."""
    return bool(_NAME.fullmatch(text)) and Path(text).suffix.lower() not in CHECKPOINT_SUFFIXES
