"""Frozen backbone networks for the SAPNet losses: where their weights come from, and how they fail.

Three backbones are needed by the training losses:

* ``"vgg16"``: the VGG-16 feature extractor of the perceptual contrastive loss (torchvision, ImageNet);
* ``"lpips"``: the trunk of the LPIPS metric (VGG-16 by default; AlexNet or SqueezeNet 1.1 on request);
* ``"seg_encoder"``: the encoder of the segmentation network of the UBS loss (segmentation-models-pytorch).

Each one is built from one of three sources, recorded as a string (see :func:`describe_source`):

* ``"imagenet"``: the ImageNet weights of torchvision / segmentation-models-pytorch. They are read from the
  local cache (torch hub cache for torchvision, Hugging Face cache for smp) and downloaded there only when
  missing. Before any download a short connection probe (:data:`PROBE_TIMEOUT_S` seconds) is made, so an
  offline machine fails in well under a second or a few seconds instead of waiting for long network
  time-outs and retries. Any failure raises :class:`BackboneUnavailableError`.
* ``"file:<path>"``: a state-dict file given by the user (``weight_files={"vgg16": path, ...}``), read with
  ``torch.load(..., weights_only=True)`` (or ``safetensors`` for ``*.safetensors``) and loaded *strictly*.
* ``"random"``: random initialisation from a fixed seed, only when asked for explicitly
  (``backbones="random"`` / ``--backbones random``). A :class:`RandomBackboneWarning` is issued each time one
  is built. There is never a silent fallback from ``"imagenet"`` to ``"random"``.

Every backbone returned here is frozen: ``requires_grad`` is off for all its parameters and it is in eval mode.
"""

from __future__ import annotations

import os
import re
import socket
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse
from urllib.request import getproxies

import torch
from torch import nn

__all__ = [
    "LPIPS_NETS",
    "PROBE_TIMEOUT_S",
    "VGG16_CONFIG",
    "WEIGHT_FILE_KEYS",
    "BackboneMode",
    "BackboneUnavailableError",
    "RandomBackboneWarning",
    "build_lpips_trunk",
    "build_segmentation_network",
    "build_vgg16_features",
    "describe_source",
    "freeze",
    "load_state_dict_file",
    "seeded",
    "torchvision_checkpoint",
]

BackboneMode = Literal["imagenet", "random"]
"""How backbones without a weight file are initialised."""

WEIGHT_FILE_KEYS = ("vgg16", "lpips", "seg_encoder")
"""The keys accepted in ``weight_files``."""

LPIPS_NETS = ("vgg", "alex", "squeeze")
"""The LPIPS trunks (names of the ``lpips`` package)."""

PROBE_TIMEOUT_S = 3.0
"""Seconds allowed for the connection probe made before any download attempt."""

VGG16_CONFIG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip
"""VGG-16 (configuration "D" of Simonyan & Zisserman): conv widths, ``"M"`` = 2x2 max-pooling."""

_RANDOM_HINT = (
    'To train without pretrained weights, pass `--backbones random` on the command line (backbones="random" in '
    "Python): the backbones are then randomly initialised from a fixed seed, which changes what the perceptual, "
    "LPIPS and segmentation losses measure. Or give a local state-dict file with weight_files={key: path} "
    "(keys: vgg16, lpips, seg_encoder)."
)


class BackboneUnavailableError(RuntimeError):
    """Pretrained backbone weights could not be found locally nor downloaded (or a weight file is invalid)."""


class RandomBackboneWarning(UserWarning):
    """A loss backbone was built with random weights (``backbones="random"``) instead of ImageNet weights."""


def describe_source(mode: BackboneMode, weight_file: str | os.PathLike[str] | None) -> str:
    """The source string of a backbone: ``"file:<path>"`` when a file is given (it wins), else ``mode``."""
    if weight_file is not None:
        return f"file:{os.fspath(weight_file)}"
    if mode not in ("imagenet", "random"):
        raise ValueError(f'backbones must be "imagenet" or "random", got {mode!r}')
    return mode


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with the CPU random generator seeded by ``seed``; the global generator state is restored."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def freeze(module: nn.Module) -> nn.Module:
    """Turn off ``requires_grad`` for every parameter of ``module`` and put it in eval mode; returns it."""
    module.requires_grad_(False)
    return module.eval()


def _warn_random(what: str, seed: int) -> None:
    warnings.warn(
        f"{what} is randomly initialised (backbones='random', seed={seed}), not ImageNet-pretrained: the loss "
        "it feeds does not measure what the paper's loss measures. Record this with the trained model.",
        RandomBackboneWarning,
        stacklevel=4,
    )


# --------------------------------------------------------------------------------------------------- loading


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict (name -> tensor) from ``path`` on the CPU.

    ``*.safetensors`` files are read with ``safetensors``; anything else with ``torch.load(weights_only=True)``.
    A ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper is unwrapped. Raises :class:`BackboneUnavailableError`
    when the file is missing or is not a state dict.
    """
    p = Path(path)
    if not p.is_file():
        raise BackboneUnavailableError(f"weight file {p} does not exist")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(p), device="cpu")
        else:
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable / unsafe pickle / corrupt file
        raise BackboneUnavailableError(f"cannot read weight file {p}: {exc}") from exc
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            if wrapper in obj and isinstance(obj[wrapper], Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BackboneUnavailableError(f"weight file {p} does not hold a state dict (a mapping name -> tensor)")
    return dict(obj)


def _load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BackboneUnavailableError(f"the weights for {what} do not match its architecture: {exc}") from exc


def _probe(url: str) -> str | None:
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


def torchvision_checkpoint(url: str, what: str, hint: str = _RANDOM_HINT) -> Path:
    """The local path of a torchvision checkpoint, downloaded into the torch hub cache when missing.

    Looks for ``torch.hub.get_dir()/checkpoints/<file name of url>`` first; downloads only when it is missing and
    a quick connection probe succeeds. Raises :class:`BackboneUnavailableError` naming the file, the cache path
    and ``hint`` (default: the ``--backbones random`` option of training) otherwise.
    """
    cache_dir = Path(torch.hub.get_dir()) / "checkpoints"
    target = cache_dir / os.path.basename(urlparse(url).path)
    if target.is_file():
        return target
    reason = _probe(url)
    if reason is None:
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            # torchvision file names end in the first hex digits of the file's SHA-256, checked on download
            match = re.search(r"-([0-9a-f]{6,})\.pth$", target.name)
            torch.hub.download_url_to_file(url, str(target), hash_prefix=match and match.group(1), progress=False)
        except Exception as exc:  # network errors, HTTP errors, disk errors
            reason = f"download failed: {exc}"
    if reason is not None or not target.is_file():
        raise BackboneUnavailableError(
            f"Pretrained weights for {what} are unavailable: {target} is not in the torch hub cache and could not "
            f"be downloaded from {url} ({reason}). Put the file there (or set TORCH_HOME), or pass its path as "
            f"a weight file. {hint}"
        )
    return target


# ----------------------------------------------------------------------------------------------------- VGG-16


def _vgg16_layers() -> nn.Sequential:
    layers: list[nn.Module] = []
    in_ch = 3
    for item in VGG16_CONFIG:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            out_ch = int(item)
            layers += [nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_ch = out_ch
    return nn.Sequential(*layers)


def _features_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Accept a whole torchvision model state dict (``features.*`` + ``classifier.*``) or its ``features`` part."""
    if any(k.startswith("features.") for k in state):
        return {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}
    return dict(state)


_VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"  # torchvision VGG16_Weights.IMAGENET1K_V1


def build_vgg16_features(
    mode: BackboneMode = "imagenet",
    weight_file: str | os.PathLike[str] | None = None,
    seed: int = 0,
    *,
    what: str = "VGG-16",
) -> tuple[nn.Sequential, str]:
    """The 31 ``features`` layers of torchvision's VGG-16 (up to and including pool5), frozen.

    Layer indices are torchvision's (conv1_1 = 0, relu1_2 = 3, relu2_2 = 8, relu3_3 = 15, relu4_3 = 22,
    relu5_3 = 29), so torchvision state dicts load as they are.

    Args:
        mode: ``"imagenet"``: torchvision's ImageNet weights (``vgg16-397923af.pth``, from the torch hub cache,
            downloaded when missing); ``"random"``: torchvision's initialisation scheme (Kaiming-normal conv
            weights, fan-out, zero biases) from ``seed``, with a :class:`RandomBackboneWarning`.
        weight_file: a state dict of torchvision's ``vgg16()`` (whole model, the classifier is ignored) or of
            its ``features``; loaded strictly. Overrides ``mode``.
        seed: the seed of the random initialisation.
        what: how the network is named in warnings and errors.

    Returns:
        ``(features, source)`` with ``source`` as in :func:`describe_source`.
    """
    source = describe_source(mode, weight_file)
    with seeded(seed):
        features = _vgg16_layers()
        if source == "random":
            for m in features.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    nn.init.zeros_(m.bias)
    if source == "random":
        _warn_random(what, seed)
    else:
        path = Path(weight_file) if weight_file is not None else torchvision_checkpoint(_VGG16_URL, what)
        _load_strict(features, _features_state(load_state_dict_file(path)), f"{what} (from {path})")
    return freeze(features), source  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------ LPIPS trunk

_LPIPS_TRUNK_URLS = {  # torchvision IMAGENET1K_V1 weights of the LPIPS trunks
    "vgg": _VGG16_URL,
    "alex": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "squeeze": "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth",
}


def _torchvision_features(net: str, seed: int) -> nn.Sequential:
    """Randomly initialised (seeded) torchvision ``features`` of the AlexNet / SqueezeNet 1.1 LPIPS trunks."""
    import torchvision

    with seeded(seed):
        model = torchvision.models.alexnet() if net == "alex" else torchvision.models.squeezenet1_1()
    return model.features


def build_lpips_trunk(
    net: str = "vgg", mode: BackboneMode = "imagenet", weight_file: str | os.PathLike[str] | None = None, seed: int = 0
) -> tuple[nn.Sequential, str]:
    """The torchvision ``features`` module of an LPIPS trunk (``"vgg"``, ``"alex"``, ``"squeeze"``), frozen.

    Same sources as :func:`build_vgg16_features`; a weight file is a state dict of torchvision's ``vgg16()`` /
    ``alexnet()`` / ``squeezenet1_1()`` (whole model or ``features`` only), loaded strictly into ``features``.
    """
    if net not in LPIPS_NETS:
        raise ValueError(f"LPIPS net must be one of {LPIPS_NETS}, got {net!r}")
    source = describe_source(mode, weight_file)
    if net == "vgg":
        return build_vgg16_features(mode, weight_file, seed, what="VGG-16 (the LPIPS trunk)")
    features = _torchvision_features(net, seed)
    if source == "random":
        _warn_random(f"the LPIPS trunk ({net})", seed)
    else:
        path = (
            Path(weight_file)
            if weight_file is not None
            else torchvision_checkpoint(_LPIPS_TRUNK_URLS[net], f"the LPIPS trunk ({net})")
        )
        _load_strict(features, _features_state(load_state_dict_file(path)), f"the LPIPS trunk {net} (from {path})")
    return freeze(features), source  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------ segmentation net


def _smp_encoder_weights(encoder: str) -> Path:
    """The cached (or freshly downloaded) ImageNet weights file of an smp encoder."""
    import segmentation_models_pytorch as smp

    settings = smp.encoders.encoders.get(encoder, {}).get("pretrained_settings", {}).get("imagenet")
    if settings is None:
        raise BackboneUnavailableError(
            f"segmentation-models-pytorch knows no ImageNet weights for encoder {encoder!r}. {_RANDOM_HINT}"
        )
    repo_id, revision = settings["repo_id"], settings["revision"]
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "model.safetensors", revision=revision)
    if isinstance(cached, str) and os.path.isfile(cached):
        return Path(cached)
    url = f"{constants.ENDPOINT}/{repo_id}"
    reason = _probe(url)
    if reason is None:
        try:
            return Path(hf_hub_download(repo_id, filename="model.safetensors", revision=revision))
        except Exception as exc:
            reason = f"download failed: {exc}"
    raise BackboneUnavailableError(
        f"ImageNet weights for the segmentation encoder {encoder!r} are unavailable: {repo_id}@{revision[:12]} "
        f"(model.safetensors) is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and could not be "
        f"downloaded from {url} ({reason}). {_RANDOM_HINT}"
    )


def build_segmentation_network(
    arch: str = "FPN",
    encoder: str = "resnet101",
    *,
    classes: int = 21,
    mode: BackboneMode = "imagenet",
    weight_file: str | os.PathLike[str] | None = None,
    head_std: float = 0.01,
    seed: int = 0,
) -> tuple[nn.Module, str]:
    """A segmentation-models-pytorch network (``arch``, e.g. ``"FPN"``) with ``classes`` outputs, frozen.

    The encoder (3 input channels) is ImageNet-initialised (``mode="imagenet"``, smp's weights from the Hugging
    Face cache, downloaded when missing), loaded from ``weight_file`` (a state dict of ``model.encoder``,
    ``*.safetensors`` or ``torch.save`` file, strict), or random (smp's default initialisation from ``seed``,
    with a :class:`RandomBackboneWarning`). In every case the decoder and segmentation head convolutions are
    re-initialised from ``seed`` with weights drawn from N(0, ``head_std``²) and zero biases (the Gaussian
    head of the paper), so the head is the same for the same seed.

    Returns:
        ``(network, encoder_source)``.
    """
    import segmentation_models_pytorch as smp

    source = describe_source(mode, weight_file)
    with seeded(seed):
        model = smp.create_model(arch, encoder_name=encoder, encoder_weights=None, in_channels=3, classes=classes)
        for part in (model.decoder, model.segmentation_head):
            for m in part.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.normal_(m.weight, mean=0.0, std=head_std)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
    if source == "random":
        _warn_random(f"the segmentation encoder ({encoder})", seed)
    else:
        path = Path(weight_file) if weight_file is not None else _smp_encoder_weights(encoder)
        _load_strict(model.encoder, load_state_dict_file(path), f"the segmentation encoder {encoder} (from {path})")
    return freeze(model), source
