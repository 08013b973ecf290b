"""What the standard deraining test sets should look like, to catch a truncated or different copy.

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

from sapnet.data.datasets import DatasetWarning

__all__ = [
    "BENCHMARKS",
    "RAINY_PSNR_TOLERANCE_DB",
    "BenchmarkInfo",
    "check_benchmark",
    "get_benchmark",
]

#: How far (dB) a measured rainy-input Y-PSNR may be from the published one before :func:`check_benchmark` warns.
RAINY_PSNR_TOLERANCE_DB = 0.5


@dataclass(frozen=True)
class BenchmarkInfo:
    """One test set: what a faithful copy holds, and where it comes from."""

    name: str
    paired: bool
    count: int  # pairs when ``paired``, images otherwise
    image_size: tuple[int, int] | None  # typical (width, height); None when sizes vary or are not known here
    description: str
    source: str  # the paper that introduced the set
    rainy_psnr: float | None = None  # published rainy-input Y-PSNR (dB), MATLAB protocol
    rainy_ssim: float | None = None  # published rainy-input Y-SSIM, MATLAB protocol
    aliases: tuple[str, ...] = ()


_JORDER = "Yang et al., Deep Joint Rain Detection and Removal from a Single Image (JORDER), CVPR 2017"

BENCHMARKS: dict[str, BenchmarkInfo] = {
    info.name: info
    for info in (
        BenchmarkInfo(
            name="Rain12",
            paired=True,
            count=12,
            image_size=None,
            description="12 synthetic rainy/clean pairs, a small test set used alongside Rain100L/H",
            source="Li et al., Rain Streak Removal Using Layer Priors, CVPR 2016",
        ),
        BenchmarkInfo(
            name="Rain100L",
            paired=True,
            count=100,
            image_size=(481, 321),  # BSDS300 photos: landscape 481x321 or portrait 321x481
            description="100 synthetic light-rain pairs on BSDS300 test photos (the PReNet/JORDER copy)",
            source=_JORDER,
            # Published by PReNet-era papers as 26.90 / 0.838 (often 26.90 / 0.8384), and measured on our copy
            # (shared/data/Rain100L/PROVENANCE.md): 26.90 dB / 0.8384. High confidence.
            rainy_psnr=26.90,
            rainy_ssim=0.8384,
        ),
        BenchmarkInfo(
            name="Rain100H",
            paired=True,
            count=100,
            image_size=(481, 321),  # same 100 clean backgrounds as Rain100L
            description="100 synthetic heavy-rain pairs on the same BSDS300 backgrounds as Rain100L",
            source=_JORDER,
            # 13.56 / 0.3709 is the rainy-input row of PReNet-era comparison tables (RCDNet, CVPR 2020, as we
            # recall it) for the PReNet copy of Rain100H. Not measured here (no copy staged): medium-high confidence.
            rainy_psnr=13.56,
            rainy_ssim=0.3709,
        ),
        BenchmarkInfo(
            name="Rain1400",
            paired=True,
            count=1400,
            image_size=None,  # sizes vary
            description="DDN test split: 100 clean images, each with 14 rain-streak variants (1400 rainy images)",
            source="Fu et al., Removing Rain from Single Images via a Deep Detail Network (DDN), CVPR 2017",
            # A rainy-input figure of about 25.2 dB is recalled from comparison tables but not verified: left out.
            aliases=("DDN", "DDN-Data", "Rain1400-test"),
        ),
        BenchmarkInfo(
            name="Rain800",
            paired=True,
            count=100,
            image_size=None,
            description="test split of Rain800 (700 training + 100 test synthetic pairs)",
            source="Zhang, Sindagi & Patel, Image De-raining Using a Conditional Generative Adversarial Network "
            "(ID-CGAN), IEEE TCSVT (arXiv 2017)",
            # "Test100" in the MSPFN / MPRNet tables cites ID-CGAN: the same 100 test scenes, though the copies
            # passed around may be re-encoded, so a rainy-input figure from one does not fingerprint the other.
            aliases=("Test100", "Rain800-test", "ID-CGAN"),
        ),
        BenchmarkInfo(
            name="SIRR_real",
            paired=False,
            count=147,
            image_size=None,  # from 247x204 to 4288x2848
            description="147 real rainy photos collected from the web, no ground truth (SAPNet's real-image set)",
            source="Wei et al., Semi-supervised Transfer Learning for Image Rain Removal (SIRR), CVPR 2019",
            aliases=("SIRR", "real147", "SIRR-real147", "real_input", "SIRR real"),
        ),
        BenchmarkInfo(
            name="SPA-Data",
            paired=True,
            count=1000,
            image_size=None,
            description="real rain: 1000 test pairs whose clean image was estimated from high-frame-rate video",
            source="Wang et al., Spatial Attentive Single-Image Deraining with a High Quality Real Rain Dataset "
            "(SPANet), CVPR 2019",
            aliases=("SPA", "SPA-test", "SPANet"),
        ),
    )
}


def _normalise(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.casefold())


_LOOKUP: dict[str, BenchmarkInfo] = {}
for _info in BENCHMARKS.values():
    for _name in (_info.name, *_info.aliases):
        _key = _normalise(_name)
        assert _LOOKUP.get(_key, _info) is _info, f"benchmark alias {_name!r} is ambiguous"
        _LOOKUP[_key] = _info
del _info, _name, _key


def get_benchmark(name: str) -> BenchmarkInfo:
    """The benchmark called ``name``: case, spaces, ``-`` and ``_`` are ignored, and common aliases are accepted
    (``"rain100l"``, ``"SIRR"``, ``"real147"``, ``"Test100"``, ``"DDN"``, ``"SPA"``).

    Raises:
        KeyError: an unknown name; the message lists the valid ones.
    """
    info = _LOOKUP.get(_normalise(name))
    if info is None:
        valid = ", ".join(f"{b.name} ({', '.join(b.aliases)})" if b.aliases else b.name for b in BENCHMARKS.values())
        raise KeyError(f"unknown benchmark {name!r}; known: {valid}")
    return info


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
