"""The standard deraining data sets, each described once: names, paper, where it is published and how it
unpacks, and for the test sets what a faithful copy holds (to catch a truncated or different copy).

:data:`DATASETS` holds a :class:`DownloadInfo` per set (name, aliases, paper, the authors' page, direct file URLs
where one exists, the archive name and its SHA-256 when one has been published, where it is extracted and the
layout :func:`sapnet.data.find_pairs` will find); :func:`sapnet.data.download.download` fetches from it.
:data:`BENCHMARKS` holds a :class:`BenchmarkInfo` per test set, which refers to its :class:`DownloadInfo` for the
name, aliases and paper. Names are looked up through :func:`normalise_name` by :func:`get_download` and
:func:`get_benchmark` alike.

Published rainy-input figures (``rainy_psnr`` / ``rainy_ssim``) compare each rainy input with its clean image
under the literature's protocol: Y channel of MATLAB ``rgb2ycbcr`` on [0, 255] values, PSNR with peak 255, SSIM
of Wang et al. (11x11 Gaussian window, sigma 1.5), mean over the images. They are the fingerprint of a copy: the
same benchmark cropped, re-encoded or re-synthesised measures differently. A figure is only filled in when we
are confident of it; ``None`` means "not known here", not "not published".
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sapnet.data.datasets import DatasetWarning

__all__ = [
    "BENCHMARKS",
    "DATASETS",
    "RAINY_PSNR_TOLERANCE_DB",
    "BenchmarkInfo",
    "DownloadInfo",
    "check_benchmark",
    "get_benchmark",
    "get_download",
    "normalise_name",
]

#: How far (dB) a measured rainy-input Y-PSNR may be from the published one before :func:`check_benchmark` warns.
RAINY_PSNR_TOLERANCE_DB = 0.5


@dataclass(frozen=True)
class DownloadInfo:
    """One standard data set: its names, the paper, where it is published and how it unpacks."""

    name: str
    paper: str  # the paper that introduced the set
    page: str  # the page where its authors (or the paper that fixed the version everyone uses) share it
    target: str  # folder under the download root that receives it, e.g. "Rain100H"
    layout: str  # what sapnet.data.find_pairs / find_images should see in the target folder
    contents: str  # what a faithful copy holds, in words, e.g. "100 test pairs"
    urls: tuple[str, ...] = ()  # direct file links, tried in order; empty for manual sets
    filename: str | None = None  # the archive name (direct links) or the usual archive name (manual sets)
    sha256: str | None = None  # published SHA-256 of ``filename``; None: none published
    manual: bool = False
    mirrors: tuple[str, ...] = ()  # other pages sharing the same files (Baidu / OneDrive / Drive)
    notes: str = ""
    aliases: tuple[str, ...] = ()  # other names it goes by (compared through normalise_name)

    def instructions(self, dest: Path) -> str:
        """How to install the set by hand under ``dest``."""
        archive = f" ({self.filename})" if self.filename else ""
        mirrors = f" (files shared at {', '.join(self.mirrors)})" if self.mirrors else ""
        notes = f" {self.notes}" if self.notes else ""
        folder = dest / self.target
        check = f"python -c \"import sapnet.data as d; print(len(d.find_pairs('{folder}')))\""
        return (
            f"download {self.name}{archive} by hand from {self.page}{mirrors} and unpack it so that {folder} "
            f"holds {self.layout}.{notes} Check it with: {check}"
        )


@dataclass(frozen=True)
class BenchmarkInfo:
    """One test set: what a faithful copy holds. Its name, aliases and paper are those of ``download``."""

    download: DownloadInfo  # the set's record in DATASETS
    paired: bool
    count: int  # pairs when ``paired``, images otherwise
    image_size: tuple[int, int] | None  # typical (width, height); None when sizes vary or are not known here
    description: str
    rainy_psnr: float | None = None  # published rainy-input Y-PSNR (dB), MATLAB protocol
    rainy_ssim: float | None = None  # published rainy-input Y-SSIM, MATLAB protocol

    @property
    def name(self) -> str:
        return self.download.name

    @property
    def aliases(self) -> tuple[str, ...]:
        return self.download.aliases

    @property
    def source(self) -> str:
        """The paper that introduced the set."""
        return self.download.paper


_PRENET_BAIDU = "https://pan.baidu.com/s/1J0q6Mrno9aMCsaWZUtmbkg"
_PRENET_ONEDRIVE = "https://1drv.ms/f/s!AqLfQqtZ6GwGgep-hgjLxkov2SSZ3g"
_PRENET_PAGE = "https://github.com/csdwren/PReNet#datasets"
_JORDER_PAGE = "http://www.icst.pku.edu.cn/struct/Projects/joint_rain_removal.html"
_JORDER = "Yang et al., Deep Joint Rain Detection and Removal from a Single Image (JORDER), CVPR 2017"
_DDN = "Fu et al., Removing Rain from Single Images via a Deep Detail Network (DDN), CVPR 2017"


def _info(**kwargs: Any) -> DownloadInfo:
    return DownloadInfo(**kwargs)


DATASETS: dict[str, DownloadInfo] = {
    d.name: d
    for d in (
        _info(
            name="Rain12",
            paper="Li et al., Rain Streak Removal Using Layer Priors, CVPR 2016",
            page="http://yu-li.github.io/",
            urls=("http://yu-li.github.io/paper/li_cvpr16_rain.zip",),
            filename="li_cvpr16_rain.zip",
            target="Rain12",
            layout="12 pairs as NNN_in.png + NNN_GT.png (layout rain12), possibly one folder down",
            contents="12 pairs",
            mirrors=(_PRENET_BAIDU, _PRENET_ONEDRIVE),
            notes="The authors' archive of the paper's material; the PReNet copy (test/Rain12) is the same 12 pairs.",
        ),
        _info(
            name="Rain100L",
            paper=_JORDER,
            page=_PRENET_PAGE,
            mirrors=(_PRENET_BAIDU, _PRENET_ONEDRIVE),
            target="Rain100L",
            layout="rainy/rain-NNN.png + norain-NNN.png (layout prenet) or rain/ + clean/ with the same names",
            contents="100 test pairs",
            manual=True,
            notes=f"Use the PReNet upload (the original version); the set now on {_JORDER_PAGE} was modified.",
        ),
        _info(
            name="Rain100H",
            paper=_JORDER,
            page=_PRENET_PAGE,
            mirrors=(_PRENET_BAIDU, _PRENET_ONEDRIVE),
            target="Rain100H",
            layout="rainy/rain-NNN.png + norain-NNN.png (layout prenet) or rain/ + clean/ with the same names",
            contents="100 test pairs",
            manual=True,
            notes=f"Use the PReNet upload (the original version); the set now on {_JORDER_PAGE} was modified.",
        ),
        _info(
            name="RainTrainH",
            paper=_JORDER,
            page=_PRENET_PAGE,
            mirrors=(_PRENET_BAIDU, _PRENET_ONEDRIVE),
            target="RainTrainH",
            layout="rainy/rain-N.png + norain-N.png (layout prenet)",
            contents="1800 training pairs",
            manual=True,
            notes="546 of its backgrounds also appear in Rain100H; PReNet trains on the other 1254.",
        ),
        _info(
            name="RainTrainL",
            paper=_JORDER,
            page=_PRENET_PAGE,
            mirrors=(_PRENET_BAIDU, _PRENET_ONEDRIVE),
            target="RainTrainL",
            layout="rainy/rain-N.png + norain-N.png (layout prenet)",
            contents="200 training pairs",
            manual=True,
        ),
        _info(
            name="Rain1400",
            paper=_DDN,
            page="https://xueyangfu.github.io/projects/cvpr2017.html",
            mirrors=(_PRENET_BAIDU, _PRENET_ONEDRIVE),
            target="Rain1400",
            layout="rainy_image/N_K.jpg (K = 1..14) + ground_truth/N.jpg; not yet read by find_pairs",
            contents="1400 rainy images of 100 clean ones (test); Rain12600 is the 900-image training part",
            manual=True,
            aliases=("DDN", "DDN-Data", "Rain1400-test"),
        ),
        _info(
            name="Rain800",
            paper="Zhang, Sindagi & Patel, Image De-raining Using a Conditional Generative Adversarial Network "
            "(ID-CGAN), IEEE TCSVT (arXiv 2017)",
            page="https://github.com/hezhangsprinter/ID-CGAN",
            mirrors=("https://drive.google.com/open?id=0Bw2e6Q0nQQvGbi1xV1Yxd09rY2s",),
            target="Rain800",
            layout="rain/ + clean/ with the same names (split the side-by-side files first, see datasets/Rain800)",
            contents="700 training + 100 test pairs",
            manual=True,
            aliases=("Test100", "Rain800-test", "ID-CGAN"),
        ),
        _info(
            name="SPA-Data",
            paper="Wang et al., Spatial Attentive Single-Image Deraining with a High Quality Real Rain Dataset "
            "(SPANet), CVPR 2019",
            page="https://stevewongv.github.io/derain-project.html",
            mirrors=("https://github.com/stevewongv/SPANet",),
            target="SPA-Data",
            layout="rain/ + clean/ (or rainy/ + gt/) with the same names, from the test archive real_test.zip",
            contents="1000 real-rain test pairs (training part: about 29.5K pairs, ~44 GB)",
            manual=True,
            aliases=("SPA", "SPA-test", "SPANet"),
        ),
        _info(
            name="SIRR_real",
            paper="Wei et al., Semi-supervised Transfer Learning for Image Rain Removal (SIRR), CVPR 2019",
            page="https://github.com/wwzjer/Semi-supervised-IRR",
            target="SIRR_real",
            layout="the real rainy photos directly in the folder (unpaired: no-reference metrics only)",
            contents="147 real rainy photos, no ground truth",
            manual=True,
            aliases=("SIRR", "real147", "SIRR-real147", "real_input", "SIRR real"),
        ),
    )
}

BENCHMARKS: dict[str, BenchmarkInfo] = {
    info.name: info
    for info in (
        BenchmarkInfo(
            download=DATASETS["Rain12"],
            paired=True,
            count=12,
            image_size=None,
            description="12 synthetic rainy/clean pairs, a small test set used alongside Rain100L/H",
        ),
        BenchmarkInfo(
            download=DATASETS["Rain100L"],
            paired=True,
            count=100,
            image_size=(481, 321),  # BSDS300 photos: landscape 481x321 or portrait 321x481
            description="100 synthetic light-rain pairs on BSDS300 test photos (the PReNet/JORDER copy)",
            # Published by PReNet-era papers as 26.90 / 0.838 (often 26.90 / 0.8384), and measured on our copy
            # (shared/data/Rain100L/PROVENANCE.md): 26.90 dB / 0.8384. High confidence.
            rainy_psnr=26.90,
            rainy_ssim=0.8384,
        ),
        BenchmarkInfo(
            download=DATASETS["Rain100H"],
            paired=True,
            count=100,
            image_size=(481, 321),  # same 100 clean backgrounds as Rain100L
            description="100 synthetic heavy-rain pairs on the same BSDS300 backgrounds as Rain100L",
            # 13.56 / 0.3709 is the rainy-input row of PReNet-era comparison tables (RCDNet, CVPR 2020, as we
            # recall it) for the PReNet copy of Rain100H. Not measured here (no copy staged): medium-high confidence.
            rainy_psnr=13.56,
            rainy_ssim=0.3709,
        ),
        BenchmarkInfo(
            download=DATASETS["Rain1400"],
            paired=True,
            count=1400,
            image_size=None,  # sizes vary
            description="DDN test split: 100 clean images, each with 14 rain-streak variants (1400 rainy images)",
            # A rainy-input figure of about 25.2 dB is recalled from comparison tables but not verified: left out.
        ),
        BenchmarkInfo(
            download=DATASETS["Rain800"],
            paired=True,
            count=100,
            image_size=None,
            description="test split of Rain800 (700 training + 100 test synthetic pairs)",
            # "Test100" in the MSPFN / MPRNet tables cites ID-CGAN: the same 100 test scenes, though the copies
            # passed around may be re-encoded, so a rainy-input figure from one does not fingerprint the other.
        ),
        BenchmarkInfo(
            download=DATASETS["SIRR_real"],
            paired=False,
            count=147,
            image_size=None,  # from 247x204 to 4288x2848
            description="147 real rainy photos collected from the web, no ground truth (SAPNet's real-image set)",
        ),
        BenchmarkInfo(
            download=DATASETS["SPA-Data"],
            paired=True,
            count=1000,
            image_size=None,
            description="real rain: 1000 test pairs whose clean image was estimated from high-frame-rate video",
        ),
    )
}


def normalise_name(name: str) -> str:
    """The key under which data set names and aliases are compared: casefolded, everything but ASCII letters
    and digits dropped (``"SPA-Data"``, ``"spa_data"`` and ``"SPA data"`` are all ``"spadata"``)."""
    return re.sub(r"[^0-9a-z]", "", name.casefold())


def _index() -> dict[str, str]:
    """Normalised name or alias -> the :data:`DATASETS` key; refuses an alias shared by two sets."""
    index: dict[str, str] = {}
    for info in DATASETS.values():
        for name in (info.name, *info.aliases):
            key = normalise_name(name)
            if index.setdefault(key, info.name) != info.name:
                raise RuntimeError(f"data set name {name!r} is ambiguous ({index[key]} and {info.name})")
    return index


_INDEX = _index()


def get_download(name: str) -> DownloadInfo:
    """The :data:`DATASETS` entry called ``name`` (see :func:`get_benchmark` for what is ignored and accepted;
    also the training sets ``RainTrainH`` / ``RainTrainL``).

    Raises:
        KeyError: unknown name; the message lists the known ones.
    """
    key = _INDEX.get(normalise_name(name))
    if key is None or key not in DATASETS:
        raise KeyError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[key]


def get_benchmark(name: str) -> BenchmarkInfo:
    """The benchmark called ``name``: case, spaces, ``-`` and ``_`` are ignored (:func:`normalise_name`), and
    common aliases are accepted (``"rain100l"``, ``"SIRR"``, ``"real147"``, ``"Test100"``, ``"DDN"``, ``"SPA"``).

    Raises:
        KeyError: an unknown name; the message lists the valid ones.
    """
    key = _INDEX.get(normalise_name(name))
    if key is None or key not in BENCHMARKS:
        valid = ", ".join(f"{b.name} ({', '.join(b.aliases)})" if b.aliases else b.name for b in BENCHMARKS.values())
        raise KeyError(f"unknown benchmark {name!r}; known: {valid}")
    return BENCHMARKS[key]


def check_benchmark(name: str, n_found: int, rainy_psnr: float | None = None, *, warn: bool = True) -> list[str]:
    """Compare a local copy of benchmark ``name`` with what the literature used.

    Args:
        name: benchmark name or alias (see :func:`get_benchmark`).
        n_found: pairs (or images, for an unpaired set) found in the copy.
        rainy_psnr: the copy's measured mean rainy-input Y-PSNR (dB) under the MATLAB protocol, if computed.
        warn: also emit each message as a :class:`DatasetWarning` (``False``: only return them).

    Returns:
        The warnings; empty when the copy looks faithful.

    Raises:
        KeyError: an unknown benchmark name.
    """
    info = get_benchmark(name)
    if n_found < 0:
        raise ValueError(f"n_found must be >= 0, got {n_found}")
    unit = "pairs" if info.paired else "images"
    problems = []
    if n_found != info.count:
        what = "a truncated or partial copy" if n_found < info.count else "a different or merged copy"
        problems.append(
            f"{info.name}: found {n_found} {unit}, the benchmark has {info.count}; this looks like {what}, so its "
            f"scores are not comparable with published ones"
        )
    if rainy_psnr is not None and info.rainy_psnr is not None:
        delta = rainy_psnr - info.rainy_psnr
        if abs(delta) > RAINY_PSNR_TOLERANCE_DB:
            problems.append(
                f"{info.name}: rainy inputs measure {rainy_psnr:.2f} dB Y-PSNR against their clean images, "
                f"published {info.rainy_psnr:.2f} dB ({delta:+.2f} dB); a different copy (cropped, re-encoded, "
                f"re-synthesised or mis-paired) or a different PSNR protocol (RGB instead of MATLAB Y channel)"
            )
    if warn:
        for message in problems:
            warnings.warn(message, DatasetWarning, stacklevel=2)
    return problems
