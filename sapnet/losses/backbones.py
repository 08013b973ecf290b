"""Frozen backbone networks for the SAPNet losses: where their weights come from, and how they fail.

Three backbones are needed by the training losses:

* ``"vgg16"``: the VGG-16 feature extractor of the perceptual contrastive loss (torchvision, ImageNet);
* ``"lpips"``: the trunk of the LPIPS metric (VGG-16 by default; AlexNet or SqueezeNet 1.1 on request);
* ``"seg_encoder"``: the encoder of the segmentation network of the UBS loss (segmentation-models-pytorch).

Each one is built from one of three sources, recorded as a string (see :func:`describe_source`):

* ``"imagenet"``: the ImageNet weights of torchvision / segmentation-models-pytorch. They are read from the
  local cache (torch hub cache for torchvision, Hugging Face cache for smp) and downloaded there only when
  missing. Before any download a short connection probe (:data:`sapnet.hub.PROBE_TIMEOUT_S` seconds) is made,
  so an offline machine fails in well under a second or a few seconds instead of waiting for long network
  time-outs and retries. Any failure raises :class:`BackboneUnavailableError` (the package's one
  :class:`sapnet.hub.WeightsUnavailableError`).
* ``"file:<path>"``: a state-dict file given by the user (``weight_files={"vgg16": path, ...}``), read with
  ``torch.load(..., weights_only=True)`` (or ``safetensors`` for ``*.safetensors``) and loaded *strictly*
  (:func:`sapnet.hub.load_state_dict_file`, :func:`sapnet.hub.load_strict`).
* ``"random"``: random initialisation from a fixed seed, only when asked for explicitly
  (``backbones="random"`` / ``--backbones random``). A :class:`RandomBackboneWarning` (the package's one
  :class:`sapnet.hub.RandomWeightsWarning`) is issued each time one is built. There is never a silent
  fallback from ``"imagenet"`` to ``"random"``.

Every backbone returned here is frozen: ``requires_grad`` is off for all its parameters and it is in eval mode.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, TypeVar

import torch
from torch import nn

from sapnet import hub
from sapnet.hub import (
    RandomWeightsWarning,
    WeightsUnavailableError,
    load_state_dict_file,
    load_strict,
    offline_hint,
    seeded,
    torchvision_checkpoint,
)

__all__ = [
    "LPIPS_NETS",
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
]

ModuleT = TypeVar("ModuleT", bound=nn.Module)

BackboneMode = Literal["imagenet", "random"]
"""How backbones without a weight file are initialised."""

WEIGHT_FILE_KEYS = ("vgg16", "lpips", "seg_encoder")
"""The keys accepted in ``weight_files``."""

LPIPS_NETS = ("vgg", "alex", "squeeze")
"""The LPIPS trunks (names of the ``lpips`` package)."""

VGG16_CONFIG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip
"""VGG-16 (configuration "D" of Simonyan & Zisserman): conv widths, ``"M"`` = 2x2 max-pooling."""

BackboneUnavailableError = WeightsUnavailableError
"""Pretrained backbone weights could not be found locally nor downloaded (or a weight file is invalid): the
package's one :class:`sapnet.hub.WeightsUnavailableError`, under the name the losses document."""

RandomBackboneWarning = RandomWeightsWarning
"""A loss backbone was built with random weights (``backbones="random"``): :class:`sapnet.hub.RandomWeightsWarning`."""

_HINT = offline_hint(
    "weight_files={key: path}, keys vgg16, lpips, seg_encoder",
    '`--backbones random` on the command line, backbones="random" in Python',
    "initialised from a fixed seed, which changes what the perceptual, LPIPS and segmentation losses measure",
)


def describe_source(mode: BackboneMode, weight_file: str | os.PathLike[str] | None) -> str:
    """The source string of a backbone: ``"file:<path>"`` when a file is given (it wins), else ``mode``."""
    if weight_file is not None:
        return f"file:{os.fspath(weight_file)}"
    if mode not in ("imagenet", "random"):
        raise ValueError(f'backbones must be "imagenet" or "random", got {mode!r}')
    return mode


def freeze(module: ModuleT) -> ModuleT:
    """Turn off ``requires_grad`` for every parameter of ``module`` and put it in eval mode; returns it."""
    module.requires_grad_(False)
    return module.eval()


def _warn_random(what: str, seed: int) -> None:
    warnings.warn(
        f"{what} is randomly initialised (backbones='random', seed={seed}), not ImageNet-pretrained: the loss "
        "it feeds does not measure what the paper's loss measures. Record this with the trained model.",
        RandomWeightsWarning,
        stacklevel=4,
    )


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
            weights, fan-out, zero biases) from ``seed``, with a :class:`~sapnet.hub.RandomWeightsWarning`.
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
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
    if source == "random":
        _warn_random(what, seed)
    else:
        path = Path(weight_file) if weight_file is not None else torchvision_checkpoint(_VGG16_URL, what, _HINT)
        load_strict(features, _features_state(load_state_dict_file(path)), f"{what} (from {path})")
    return freeze(features), source


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
            else torchvision_checkpoint(_LPIPS_TRUNK_URLS[net], f"the LPIPS trunk ({net})", _HINT)
        )
        load_strict(features, _features_state(load_state_dict_file(path)), f"the LPIPS trunk {net} (from {path})")
    return freeze(features), source


# ------------------------------------------------------------------------------------------ segmentation net


def _smp_encoder_weights(encoder: str) -> Path:
    """The cached (or freshly downloaded) ImageNet weights file of an smp encoder."""
    import segmentation_models_pytorch as smp

    settings = smp.encoders.encoders.get(encoder, {}).get("pretrained_settings", {}).get("imagenet")
    if settings is None:
        raise WeightsUnavailableError(
            f"segmentation-models-pytorch knows no ImageNet weights for encoder {encoder!r}. {_HINT}"
        )
    repo_id, revision = settings["repo_id"], settings["revision"]
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "model.safetensors", revision=revision)
    if isinstance(cached, str) and os.path.isfile(cached):
        return Path(cached)
    url = f"{constants.ENDPOINT}/{repo_id}"
    reason = hub.probe(url)
    if reason is None:
        try:
            return Path(hf_hub_download(repo_id, filename="model.safetensors", revision=revision))
        except Exception as exc:
            reason = f"download failed: {exc}"
    raise WeightsUnavailableError(
        f"ImageNet weights for the segmentation encoder {encoder!r} are unavailable: {repo_id}@{revision[:12]} "
        f"(model.safetensors) is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and could not be "
        f"downloaded from {url} ({reason}). {_HINT}"
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
    with a :class:`~sapnet.hub.RandomWeightsWarning`). In every case the decoder and segmentation head convolutions are
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
        load_strict(model.encoder, load_state_dict_file(path), f"the segmentation encoder {encoder} (from {path})")
    return freeze(model), source
