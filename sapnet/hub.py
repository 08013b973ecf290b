"""Where pretrained weights come from, and how their absence is reported: the plumbing shared by the model registry
(:mod:`sapnet.models.hub`), the loss backbones (:mod:`sapnet.losses.backbones`) and the downstream models
(:mod:`sapnet.downstream.models`).

* Errors and warnings: every "these weights cannot be had or do not fit" failure is a
  :class:`WeightsUnavailableError` (``sapnet.losses.BackboneUnavailableError`` and
  ``sapnet.downstream.ModelUnavailableError`` are the same class; the registry's ``sapnet.models.WeightsError``
  is a subclass that is also a ``CheckpointError``); every network built with random instead of pretrained
  weights issues a :class:`RandomWeightsWarning`.
* Files: the torch hub cache (:func:`hub_checkpoint_dir`, follows ``$TORCH_HOME``), torchvision checkpoints in it
  (:func:`torchvision_checkpoint`, downloaded only after a quick connection :func:`probe`), content-addressed
  lookup in a mirror folder (:func:`find_file`, by size and :func:`file_sha256`), and reading a state-dict file
  (:func:`load_state_dict_file`) into a network strictly (:func:`load_strict`).
* Random initialisation from a seed without touching the global generator (:func:`seeded`), and the input
  normalisation of ImageNet-pretrained networks (:data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import getproxies

import torch
from torch import nn

from sapnet.data.download import sha256sum

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PROBE_TIMEOUT_S",
    "RandomWeightsWarning",
    "WeightsUnavailableError",
    "file_sha256",
    "find_file",
    "hub_checkpoint_dir",
    "load_state_dict_file",
    "load_strict",
    "offline_hint",
    "probe",
    "seeded",
    "torchvision_checkpoint",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""Per-channel (RGB) mean of ImageNet, subtracted from [0, 1] images before an ImageNet-pretrained network."""

IMAGENET_STD = (0.229, 0.224, 0.225)
"""Per-channel (RGB) standard deviation of ImageNet, dividing the centred images."""

PROBE_TIMEOUT_S = 3.0
"""Seconds allowed for the connection probe made before any download attempt of :func:`torchvision_checkpoint`."""


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights (or a model file) that cannot be had: not cached, not mirrored, offline, download failed,
    or a file that is missing, unreadable or does not fit its network. The message names what is missing."""


class RandomWeightsWarning(UserWarning):
    """A network was built with random weights (asked for explicitly) instead of pretrained ones."""


def offline_hint(file_option: str, random_option: str, consequence: str) -> str:
    """The sentence ending a "weights unavailable" message: how to give a local file instead, or go random.

    Example: ``offline_hint("--weights FILE", "--weights random", "to test the plumbing only")``.
    """
    random = f"random weights with {random_option} ({consequence})"
    return f"Give a local state-dict file instead ({file_option}), or {random}."


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with the CPU random generator seeded by ``seed``; the global generator state is restored."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# ------------------------------------------------------------------------------------------------------ files


def hub_checkpoint_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints`` (follows ``$TORCH_HOME``): torchvision's cache of weight files."""
    return Path(torch.hub.get_dir()) / "checkpoints"


@cache
def _hash(path: Path, size: int, mtime_ns: int) -> str:
    return sha256sum(path)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, memoised per (path, size, modification time): a changed file is hashed again."""
    p = Path(path).resolve()
    st = p.stat()
    return _hash(p, st.st_size, st.st_mtime_ns)


def find_file(folder: str | os.PathLike[str], size: int, sha256: str) -> Path | None:
    """A file below ``folder`` (recursively, links followed, names sorted) of ``size`` bytes and hex SHA-256
    ``sha256``, whatever its name; ``None`` when there is none or ``folder`` is not a directory."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        return None
    for dirpath, _, files in os.walk(root, followlinks=True):
        for name in sorted(files):
            path = Path(dirpath) / name
            try:
                if path.stat().st_size == size and file_sha256(path) == sha256:
                    return path
            except OSError:
                continue
    return None


def probe(url: str) -> str | None:
    """``None`` when a TCP connection to the host of ``url`` opens within :data:`PROBE_TIMEOUT_S`, else why not.

    Skipped (``None``) when a proxy is configured for the scheme, since direct connections may then be blocked
    while downloads work.
    """
    parsed = urlparse(url)
    if getproxies().get(parsed.scheme):
        return None
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return None
    except OSError as exc:
        return f"cannot reach {host}:{port} ({exc})"


def torchvision_checkpoint(url: str, what: str, hint: str) -> Path:
    """The local path of a torchvision checkpoint, downloaded into the torch hub cache when missing.

    Looks for ``hub_checkpoint_dir()/<file name of url>`` first; downloads only when it is missing and a quick
    connection :func:`probe` succeeds (the hash prefix in torchvision's file names is checked). Raises
    :class:`WeightsUnavailableError` naming ``what``, the file, the cache path, the URL and ``hint`` otherwise.
    """
    folder = hub_checkpoint_dir()
    target = folder / os.path.basename(urlparse(url).path)
    if target.is_file():
        return target
    reason = probe(url)
    if reason is None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # torchvision file names end in the first hex digits of the file's SHA-256, checked on download
            match = re.search(r"-([0-9a-f]{6,})\.pth$", target.name)
            torch.hub.download_url_to_file(url, str(target), hash_prefix=match and match.group(1), progress=False)
        except Exception as exc:  # network errors, HTTP errors, disk errors
            reason = f"download failed: {exc}"
    if reason is not None or not target.is_file():
        raise WeightsUnavailableError(
            f"Pretrained weights for {what} are unavailable: {target} is not in the torch hub cache and could not "
            f"be downloaded from {url} ({reason}). Download it there on a machine with internet access and copy "
            f"it over (or set TORCH_HOME to a folder whose hub/checkpoints holds it). {hint}"
        )
    return target


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict (name -> tensor) from ``path`` on the CPU.

    ``*.safetensors`` files are read with ``safetensors``; anything else with ``torch.load(weights_only=True)``.
    A ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper is unwrapped. Raises :class:`WeightsUnavailableError`
    when the file is missing or is not a state dict.
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsUnavailableError(f"weight file {p} does not exist")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(p), device="cpu")
        else:
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable / unsafe pickle / corrupt file
        raise WeightsUnavailableError(f"cannot read weight file {p}: {exc}") from exc
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            if wrapper in obj and isinstance(obj[wrapper], Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsUnavailableError(f"weight file {p} does not hold a state dict (a mapping name -> tensor)")
    return dict(obj)


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """``module.load_state_dict(state, strict=True)``; a mismatch raises :class:`WeightsUnavailableError` saying
    that the weights of ``what`` (e.g. ``"VGG-16 (from vgg.pth)"``) do not fit, with torch's list of keys."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsUnavailableError(f"the weights for {what} do not fit its architecture: {exc}") from exc
