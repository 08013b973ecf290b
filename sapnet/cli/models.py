"""``sapnet models``: the registry's architectures, or (``--pretrained``) every published weights entry."""

from __future__ import annotations

import argparse
from typing import Any

from sapnet.models import ARCHITECTURES, DEFAULT_MODEL, WEIGHTS, list_models
from sapnet.models.hub import cached_file
from sapnet.models.registry import measured_scores

__all__ = ["add_parser", "pretrained_table", "run", "score_cell"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "models",
        help="list the model architectures, or (--pretrained) every published weights entry",
        description="List the registry: architectures (build with sapnet.create_model(NAME)) or, with "
        "--pretrained, every arch.tag with published weights (sapnet.create_model(NAME, pretrained=True), "
        "sapnet derain --model NAME), with the scores we measured and those published.",
    )
    p.add_argument("filter", nargs="?", default="", metavar="PATTERN", help="fnmatch pattern, e.g. 'prn*'")
    p.add_argument("--pretrained", action="store_true", help="list the weights entries instead of the architectures")
    p.set_defaults(run=run)
    return p


def score_cell(scores: dict[str, Any], *fields: str) -> str:
    """``"34.89 / 0.9707 (n=100)"`` from measured ``{"n": ..., field: value}`` (SSIM to 4 places); ``"-"`` if none."""
    if not scores:
        return "-"
    text = " / ".join(f"{scores[f]:.4f}" if f == "ssim" else f"{scores[f]:.2f}" for f in fields)
    return f"{text} (n={scores['n']})"


def pretrained_table(names: list[str]) -> str:
    """A Markdown table of the weights entries ``names``, the sources of published figures as footnotes."""
    sources: list[str] = []
    rows = [
        "| name | params | trained on | Rain100L PSNR / SSIM (measured) | real photos BRISQUE (measured) | "
        "published (authors' test set) | licence | cached |",  # ours are shipped in checkpoints/
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        e = WEIGHTS[name]
        m = measured_scores(name)
        cited = []
        for p in e.published:
            if p.source not in sources:
                sources.append(p.source)
            cited.append(f"{p.dataset} {p.psnr:.2f} / {p.ssim:.3f} [{sources.index(p.source) + 1}]")
        published = "; ".join(cited) or "-"
        default = " (default)" if name == DEFAULT_MODEL else ""
        rain100l = score_cell(m.get("rain100l", {}), "psnr", "ssim")
        rows.append(
            f"| {name}{default} | {e.params:,} | {e.trained_on} | {rain100l} | "
            f"{score_cell(m.get('sirr_real', {}), 'brisque')} | {published} | {e.license} | "
            f"{'shipped' if e.bundled else 'yes' if cached_file(e).is_file() else 'no'} |"
        )
    rows += ["", *(f"[{i}] {source}" for i, source in enumerate(sources, 1))] if sources else []
    return "\n".join(rows)


def run(args: argparse.Namespace) -> int:
    """Print the listing; see ``sapnet models --help``."""
    names = list_models(args.filter, pretrained=args.pretrained)
    if not names:
        print(f"no model matches {args.filter!r}")
        return 1
    if args.pretrained:
        print(pretrained_table(names))
        print("\nMeasured: benchmarks/zoo.py (MATLAB protocol: Y-channel PSNR / SSIM; BRISQUE lower is better, n =")
        print("images scored); published figures are the authors' own, not measured here.")
        return 0
    width = max(len(n) for n in names)
    for name in names:
        arch = ARCHITECTURES[name]
        tags = [w.tag for w in WEIGHTS.values() if w.arch == name]
        print(f"{name:<{width}}  {arch.reference_class:<14}  {arch.description}  [weights: {', '.join(tags)}]")
    return 0
