"""The model registry: architectures and the published weights for them, named ``arch.tag`` as in timm.

An **architecture** is a :class:`DerainNetConfig` preset (``sapnet``, ``prenet``, ``prenet_r``, ``prn``, ``prn_r``
and the topologies of PReNet's ablations and real-rain models). A **weights entry** (``prenet.rain100h``) is one
published checkpoint for an architecture: where the authors publish it (a URL pinned to a commit), its SHA-256
and size, licence, training set, stage count, parameter count, the figures its authors published and the ones we
measured (``benchmarks/zoo.py`` writes them to ``zoo_scores.json`` beside this file).

Example:
    >>> from sapnet.models.registry import get_weights, list_models
    >>> list_models("prn*")
    ['prn', 'prn_r']
    >>> get_weights("prenet.rain100l").trained_on
    'RainTrainL (200 pairs)'
"""

from __future__ import annotations

import difflib
import fnmatch
import json
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from sapnet.models.derain_net import DerainNetConfig

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_MODEL",
    "WEIGHTS",
    "Architecture",
    "PublishedScore",
    "WeightsEntry",
    "find_weights_by_sha256",
    "get_architecture",
    "get_weights",
    "is_model_name",
    "list_models",
    "measured_scores",
    "split_name",
]

_PRENET = "Ren et al., Progressive Image Deraining Networks: A Better and Simpler Baseline, CVPR 2019"
_SAPNET = "Zheng et al., SAPNet: Segmentation-Aware Progressive Network for Perceptual Contrastive Deraining, WACV 2022"


@dataclass(frozen=True)
class Architecture:
    """A network topology of the family.

    Attributes:
        name: registry name (``"prenet_r"``).
        config: the network (stage count: the published default; a weights entry may change it).
        reference_class: the class name in the authors' code (``"PReNet_r"``).
        paper: where it was published.
        description: one line for listings.
    """

    name: str
    config: DerainNetConfig
    reference_class: str
    paper: str
    description: str


_PLAIN = (1, 1, 1, 1, 1)
ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture(
            "sapnet",
            DerainNetConfig(dilations=(1, 2, 4, 8, 16), attention=True),
            "SAPNet",
            _SAPNET,
            "PReNet with progressive dilation 1..16 and channel residual attention",
        ),
        Architecture(
            "prenet",
            DerainNetConfig(dilations=_PLAIN, attention=False),
            "PReNet",
            _PRENET,
            "ConvLSTM + five residual blocks per stage, input skip",
        ),
        Architecture(
            "prenet_r",
            DerainNetConfig(dilations=_PLAIN, attention=False, shared_block=True),
            "PReNet_r",
            _PRENET,
            "PReNet with one residual block applied five times (shared weights)",
        ),
        Architecture(
            "prn",
            DerainNetConfig(dilations=_PLAIN, attention=False, recurrent="none"),
            "PRN",
            _PRENET,
            "PReNet without the recurrent cell",
        ),
        Architecture(
            "prn_r",
            DerainNetConfig(dilations=_PLAIN, attention=False, recurrent="none", shared_block=True),
            "PRN_r",
            _PRENET,
            "PRN with one residual block applied five times (shared weights)",
        ),
        Architecture(
            "prenet_lstm",
            DerainNetConfig(dilations=_PLAIN, attention=False, input_skip=False),
            "PReNet_LSTM",
            _PRENET,
            "ablation: PReNet without the input skip (predicts the image)",
        ),
        Architecture(
            "prenet_gru",
            DerainNetConfig(dilations=_PLAIN, attention=False, recurrent="gru", input_skip=False),
            "PReNet_GRU",
            _PRENET,
            "ablation: ConvGRU instead of ConvLSTM, no input skip",
        ),
        Architecture(
            "prenet_x",
            DerainNetConfig(dilations=_PLAIN, attention=False, input_skip=False, stage_input="estimate"),
            "PReNet_x",
            _PRENET,
            "ablation: each stage sees only the previous estimate, no input skip",
        ),
        Architecture(
            "prenet_real",
            DerainNetConfig(stages=4, dilations=_PLAIN, attention=False, input_skip=False, cell_position="after"),
            "Generator_lstm",
            _PRENET,
            "real-rain models: ConvLSTM after the residual blocks, no input skip, 4 stages",
        ),
    )
}


@dataclass(frozen=True)
class PublishedScore:
    """A figure published by the weights' authors (never measured by us)."""

    dataset: str
    psnr: float
    ssim: float
    source: str


@dataclass(frozen=True)
class WeightsEntry:
    """One published checkpoint.

    Attributes:
        name: ``"arch.tag"``.
        url: the authors' file, pinned to a commit.
        sha256: hex SHA-256 of that file (checked after every download and at every load).
        bytes: its size.
        license: its licence as published.
        source: repository, commit and path of the file.
        trained_on: training set.
        stages: recurrent stages the authors run it with.
        params: parameter count.
        published: the authors' figures (PSNR / SSIM on their test set), with where they were published.
        notes: anything a user should know.
        architecture: the network (an :data:`ARCHITECTURES` name) when it is not the name's ``arch`` part.
        bundled: weights trained by us and shipped in the repository's ``checkpoints/`` folder (``url`` empty:
            they are found there, in a mirror folder or in the cache, never downloaded).
        keep_input: the network's :attr:`DerainNetConfig.keep_input` (``None`` for every published file).
    """

    name: str
    url: str
    sha256: str
    bytes: int
    license: str
    source: str
    trained_on: str
    stages: int
    params: int
    published: tuple[PublishedScore, ...] = ()
    notes: str = ""
    architecture: str = ""
    bundled: bool = False
    keep_input: float | None = None

    @property
    def arch(self) -> str:
        """The name's first part (``"prenet"`` of ``"prenet.rain100h"``): the family it is listed under."""
        return self.name.split(".", 1)[0]

    @property
    def network(self) -> str:
        """The :data:`ARCHITECTURES` entry of the weights' network: ``architecture``, else :attr:`arch`."""
        return self.architecture or self.arch

    @property
    def tag(self) -> str:
        return self.name.split(".", 1)[1]

    @property
    def config(self) -> DerainNetConfig:
        """The network these weights belong to."""
        return replace(ARCHITECTURES[self.network].config, stages=self.stages, keep_input=self.keep_input)

    @property
    def filename(self) -> str:
        """Name of the file in the download cache: ``<arch>.<tag>-<first 8 hex digits of the sha256>.pth``."""
        return f"{self.name}-{self.sha256[:8]}.pth"


# --- the published files ---------------------------------------------------------------------------------------

_PRENET_REPO = "csdwren/PReNet"
_PRENET_COMMIT = "6d908d1e3c7ff5c26fee624112297ad1c8603ca7"
_PRENET_LICENSE = "none stated"  # csdwren/PReNet has no licence file
_PRENET_TABLE = f"{_PRENET_REPO} README at {_PRENET_COMMIT[:7]}, 'Average PSNR/SSIM values on four datasets'"
_SAPNET_REPO = "ShenZheng2000/SAPNet-for-image-deraining"
_SAPNET_COMMIT = "47215120e902b02fecd50f7e13309a8e34904bd1"
_TRAIN_SETS = {
    "rain100h": ("RainTrainH (1,254 pairs)", "Rain100H"),
    "rain100l": ("RainTrainL (200 pairs)", "Rain100L"),
    "rain1400": ("Rain12600 (12,600 pairs)", "Rain1400"),
}
# The authors' table: (arch, test set) -> (PSNR, SSIM).
_PRENET_PUBLISHED = {
    ("prn", "Rain100H"): (28.07, 0.884), ("prenet", "Rain100H"): (29.46, 0.899),
    ("prn_r", "Rain100H"): (27.43, 0.874), ("prenet_r", "Rain100H"): (28.98, 0.892),
    ("prn", "Rain100L"): (36.99, 0.977), ("prenet", "Rain100L"): (37.48, 0.979),
    ("prn_r", "Rain100L"): (36.11, 0.973), ("prenet_r", "Rain100L"): (37.10, 0.977),
    ("prn", "Rain1400"): (31.69, 0.941), ("prenet", "Rain1400"): (32.60, 0.946),
    ("prn_r", "Rain1400"): (31.31, 0.937), ("prenet_r", "Rain1400"): (32.44, 0.944),
}  # fmt: skip


def _prenet(name: str, path: str, sha256: str, size: int, params: int, stages: int = 6, *, trained_on: str = "",
            notes: str = "") -> WeightsEntry:  # fmt: skip
    arch, tag = name.split(".")
    key = tag.split("_")[0]
    train, test = _TRAIN_SETS.get(key, (trained_on, ""))
    score = _PRENET_PUBLISHED.get((arch, test))
    return WeightsEntry(
        name=name,
        url=f"https://github.com/{_PRENET_REPO}/raw/{_PRENET_COMMIT}/logs/{path}",
        sha256=sha256,
        bytes=size,
        license=_PRENET_LICENSE,
        source=f"{_PRENET_REPO}@{_PRENET_COMMIT[:7]}:logs/{path}",
        trained_on=trained_on or train,
        stages=stages,
        params=params,
        published=(PublishedScore(test, *score, _PRENET_TABLE),) if score else (),
        notes=notes,
    )


_ABLATION = "PReNet's ablation study (tested on Rain100H by the authors' test_Ablation.sh); "
_REAL = "the authors do not document the training data of their real-rain models (test_real.py runs 4 stages)"
WEIGHTS: dict[str, WeightsEntry] = {
    w.name: w
    for w in (
        WeightsEntry(
            name="sapnet.rain100h",
            url=f"https://github.com/{_SAPNET_REPO}/raw/{_SAPNET_COMMIT}/logs/SAPNet/Model11/net_latest.pth",
            sha256="807bb16685280a493236f3e5fa804274198044ad838b5cc060bf66af03a259cb",
            bytes=746987,
            license="MIT",
            source=f"{_SAPNET_REPO}@{_SAPNET_COMMIT[:7]}:logs/SAPNet/Model11/net_latest.pth",
            trained_on="RainTrainH",
            stages=6,
            params=180483,
            notes="the SAPNet authors' only public checkpoint (saved from DataParallel: 'module.' prefix)",
        ),
        _prenet(
            "prenet.rain100h",
            "Rain100H/PReNet6/net_latest.pth",
            "127c0098787c5272f1f8583f6c5202e7ef674f750cd145a1691912a6d9e96210",
            681694,
            168963,
        ),
        _prenet(
            "prenet.rain100l",
            "Rain100L/PReNet6/net_latest.pth",
            "cb9b743bb33cf6e5c56ba45f8ade93add46266dea9fa582e1934dc5eed942333",
            681694,
            168963,
        ),
        _prenet(
            "prenet.rain1400",
            "Rain1400/PReNet6/net_latest.pth",
            "d5744dc2e35d73187a3f34936b3413884d293277073ffb78b961a78e65337879",
            681694,
            168963,
        ),
        _prenet(
            "prenet_r.rain100h",
            "Rain100H/PReNet6_r/net_latest.pth",
            "ece8127c651cf49026d998fa36857cb9d462c92cf535b640a377fc025f765b5f",
            382755,
            94979,
        ),
        _prenet(
            "prenet_r.rain100l",
            "Rain100L/PReNet6_r/net_latest.pth",
            "31dd4419cdb0f4da623d974747113d60e2c22803598c39dcf03d789f86a7f62b",
            382755,
            94979,
        ),
        _prenet(
            "prenet_r.rain1400",
            "Rain1400/PReNet6_r/net_latest.pth",
            "c639c19b342d6ae977b7ff8a4b2fbeb24179510a6e57b8bf5ef32d6b071fc8d5",
            382755,
            94979,
        ),
        _prenet(
            "prn.rain100h",
            "Rain100H/PRN6/net_latest.pth",
            "f1d56a7df0851eb087652663781d3f34c4c37a4c7ddd9a3f0802abbede1a06c2",
            384596,
            95107,
        ),
        _prenet(
            "prn.rain100l",
            "Rain100L/PRN6/net_latest.pth",
            "ed4be5b78f76dcec5c781e1655dee48c2a90b56993de555945d72e31848aea99",
            384596,
            95107,
        ),
        _prenet(
            "prn.rain1400",
            "Rain1400/PRN6/net_latest.pth",
            "c6620860a51b54afec0c1eebe412f0f1ca00128100f5b23c13758605206a0bf2",
            384596,
            95107,
        ),
        _prenet(
            "prn_r.rain100h",
            "Rain100H/PRN6_r/net_latest.pth",
            "99242ce096c9c617bd529a5e189797e8955a4b8611d355974c7c1c64a18b9074",
            86047,
            21123,
        ),
        _prenet(
            "prn_r.rain100l",
            "Rain100L/PRN6_r/net_latest.pth",
            "87ee3b1c027b33e7e532a4881c3b077d100cf40c65dd2843690600e3023acee0",
            86047,
            21123,
        ),
        _prenet(
            "prn_r.rain1400",
            "Rain1400/PRN6_r/net_latest.pth",
            "c0f7f18f3d33e26f50af8c693494a03c2776c627140a1d8e0514edd53e9398fb",
            86047,
            21123,
        ),
        _prenet(
            "prenet_lstm.rain100h",
            "Ablation/PReNet6_LSTM/net_latest.pth",
            "b32541dfad6aa173c537dada8597475227e920fc9c8e1bbb80061363462bc14c",
            681694,
            168963,
            notes=_ABLATION + "6 stages",
        ),
        _prenet(
            "prenet_lstm.rain100h_t5",
            "Ablation/PReNet5_LSTM/net_latest.pth",
            "02a0a1c184a87bf816e341a092756666f52277b5d34d9e224ba6ae904d2e991e",
            681694,
            168963,
            stages=5,
            notes=_ABLATION + "5 stages",
        ),
        _prenet(
            "prenet_lstm.rain100h_t7",
            "Ablation/PReNet7_LSTM/net_latest.pth",
            "c5971708f06fefcbd467588321958160806225bccb4415e9ca56073d68b8f812",
            681694,
            168963,
            stages=7,
            notes=_ABLATION + "7 stages",
        ),
        _prenet(
            "prenet_lstm.rain100h_recssim",
            "Ablation/PReNet6_RecSSIM/net_latest.pth",
            "04ee235b6fed1798d48fbfd8b31f853d782fa6fdcae172f533979264a96ed7a4",
            681694,
            168963,
            notes=_ABLATION + "trained with the negative SSIM of every stage (recursive SSIM loss)",
        ),
        _prenet(
            "prenet_gru.rain100h",
            "Ablation/PReNet6_GRU/net_latest.pth",
            "2c0ed5ec96fe54c83a474c597741843ae4e98f1aac019470ce51235ac3bf66ff",
            607325,
            150499,
            notes=_ABLATION + "ConvGRU",
        ),
        _prenet(
            "prenet_x.rain100h",
            "Ablation/PReNet6_x/net_latest.pth",
            "ae76d3dce017c181f6c541c4884d606315b4a09ca1d29757ca44c8688e845bfe",
            678238,
            168099,
            notes=_ABLATION + "input: the previous estimate only",
        ),
        _prenet(
            "prenet_real.real1",
            "real/PReNet1.pth",
            "eba0c0ed941565abce9c61ceb8b36ff5e1532320c20efc11843f5f7fc810f7bb",
            681694,
            168963,
            stages=4,
            trained_on="real rainy images (not documented)",
            notes=_REAL,
        ),
        _prenet(
            "prenet_real.real2",
            "real/PReNet2.pth",
            "cbf6068474e64bf81ea8597fe1473cda19e7d0afadb3c81beb41f8dcc3751269",
            681694,
            168963,
            stages=4,
            trained_on="real rainy images (not documented)",
            notes=_REAL,
        ),
        WeightsEntry(
            name="sapnet.real",
            url="",
            sha256="7dbd2b6a77bab7418d31ffe861596235fad89fa981daee7c6f2cc9d262f7d157",
            bytes=688003,
            license="MIT",
            source="trained by the sapnet project (checkpoints/README.md: the model card)",
            trained_on="prenet.rain100h adapted to 97 real SIRR photos (pseudo-labels) + light synthetic rain",
            stages=6,
            params=168963,
            notes="ours, for real rain: PReNet weights with keep_input=0.02; shipped in checkpoints/, not downloaded",
            architecture="prenet",
            bundled=True,
            keep_input=0.02,
        ),
    )
}
"""Every checkpoint by ``arch.tag`` name: the published ones and ours (``bundled``)."""

DEFAULT_MODEL = "prenet.rain100h"
"""The weights :func:`sapnet.derain` and ``sapnet derain`` use when no model is given: among the two best of the
zoo on real photos (SIRR BRISQUE), the one that also keeps Rain100L (34.89 dB); see the README's "Pretrained
models" for the figures."""


# --- lookups ---------------------------------------------------------------------------------------------------


def split_name(name: str) -> tuple[str, str | None]:
    """``"prenet.rain100h"`` -> ``("prenet", "rain100h")``; ``"prenet"`` -> ``("prenet", None)``."""
    arch, _, tag = name.partition(".")
    return arch, tag or None


def _unknown(kind: str, name: str, valid: list[str]) -> KeyError:
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return KeyError(f"unknown {kind} {name!r}; {hint}valid names: {', '.join(valid)}")


def get_architecture(name: str) -> Architecture:
    """The architecture ``name`` (the part before any ``.tag``); ``KeyError`` naming the closest valid ones."""
    arch, _ = split_name(name)
    if arch not in ARCHITECTURES:
        raise _unknown("architecture", arch, sorted(ARCHITECTURES))
    return ARCHITECTURES[arch]


def get_weights(name: str) -> WeightsEntry:
    """The weights entry ``arch.tag``; a bare ``arch`` gives its first (default) entry.

    Raises:
        KeyError: unknown name, or an architecture without published weights; the message names the closest
            valid names.
    """
    if name in WEIGHTS:
        return WEIGHTS[name]
    arch, tag = split_name(name)
    if tag is None and arch in ARCHITECTURES:
        for entry in WEIGHTS.values():
            if entry.arch == arch:
                return entry
        raise KeyError(f"architecture {arch!r} has no published weights; with weights: {', '.join(WEIGHTS)}")
    raise _unknown("pretrained model", name, sorted(WEIGHTS))


def is_model_name(name: str) -> bool:
    """Whether ``name`` is an architecture or a weights entry of the registry."""
    return name in WEIGHTS or (split_name(name)[1] is None and name in ARCHITECTURES)


def list_models(filter: str = "", pretrained: bool = False) -> list[str]:
    """Registry names, sorted.

    Args:
        filter: an ``fnmatch`` pattern (``"prn*"``); empty: all.
        pretrained: ``False``: the architectures (build them with :func:`sapnet.create_model`); ``True``: every
            ``arch.tag`` with published weights (``sapnet.create_model(name, pretrained=True)``).
    """
    names = sorted(WEIGHTS) if pretrained else sorted(ARCHITECTURES)
    return [n for n in names if not filter or fnmatch.fnmatchcase(n, filter)]


@cache
def _by_sha256() -> dict[str, WeightsEntry]:
    return {entry.sha256: entry for entry in WEIGHTS.values()}


def find_weights_by_sha256(sha256: str) -> WeightsEntry | None:
    """The entry whose published file has this SHA-256, if any (identifies a user's copy of a public file)."""
    return _by_sha256().get(sha256.lower())


SCORES_FILE = Path(__file__).with_name("zoo_scores.json")


@cache
def _scores() -> dict[str, Any]:
    if not SCORES_FILE.is_file():
        return {}
    data: dict[str, Any] = json.loads(SCORES_FILE.read_text(encoding="utf-8"))
    return data.get("models", {})


def measured_scores(name: str) -> dict[str, Any]:
    """What ``benchmarks/zoo.py`` measured for the weights ``name`` (empty if not measured yet): per data set
    ``{"n": images, "psnr": ..., "ssim": ...}`` or ``{"n": ..., "brisque": ...}``, and ``seconds_per_image``."""
    return dict(_scores().get(name, {}))
