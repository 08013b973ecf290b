"""The learning curve of a real-rain adaptation run (``sapnet adapt``), for ``benchmarks/RESULTS.md``.

    python benchmarks/real_adaptation.py [--run runs/adapt_real]

Reads the run's ``val.csv`` (held-out scores before training and after every epoch), ``log.csv`` (training
losses) and ``pseudo_labels/bank.json`` (where the labels came from) and prints, as Markdown: per validation,
the held-out means with their ratio to the starting weights' (row 0), the paired validation PSNR / SSIM if
the run had ``data.val``, the mean training losses of the epoch and which checkpoint ``best.pt`` holds; then
the labels' sources. No network is run: the figures are the run's.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from collections import Counter
from pathlib import Path


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("runs/adapt_real"), help="the run's output folder")
    args = parser.parse_args(argv)
    val, log = _rows(args.run / "val.csv"), _rows(args.run / "log.csv")
    if not val or "real_score" not in val[0]:
        parser.error(f"{args.run / 'val.csv'}: no held-out scores (not an adaptation run?)")
    metrics = [k for k in val[0] if k.startswith("real_") and k != "real_score"]
    losses = [k for k in ("loss", "ssim", "pseudo", "real_ubs", "real_contrastive") if log and k in log[0]]
    start = {k: float(val[0][k]) for k in [*metrics, "real_score"]}
    best = min(range(len(val)), key=lambda i: float(val[i]["real_score"]))
    names = [m.removeprefix("real_").upper() for m in metrics]
    paired = [k for k in ("psnr", "ssim") if k in val[0]]
    head = ["epoch", "step", *(f"{n} (x start)" for n in names), "score", *(f"val {k.upper()}" for k in paired),
            *(f"train {k}" for k in losses), ""]  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for i, row in enumerate(val):
        epoch = int(row["epoch"])
        in_epoch = [r for r in log if int(r["epoch"]) == epoch - 1]
        cells = [row["epoch"], row["step"]]
        cells += [f"{float(row[m]):.3f} ({float(row[m]) / start[m]:.3f})" for m in metrics]
        cells.append(f"{float(row['real_score']):.4f}")
        cells += [f"{float(row[k]):.{2 if k == 'psnr' else 4}f}" for k in paired]
        cells += [f"{statistics.fmean(float(r[k]) for r in in_epoch):.4f}" if in_epoch else "" for k in losses]
        cells.append("best.pt" if i == best else "")
        print("| " + " | ".join(cells) + " |")
    bank_file = args.run / "pseudo_labels" / "bank.json"
    if bank_file.is_file():
        bank = json.loads(bank_file.read_text(encoding="utf-8"))
        sources = Counter(label["source"] for label in bank["labels"].values())
        shown = ", ".join(f"{k} {v}" for k, v in sources.most_common())
        print(f"\npseudo-labels after {bank['updates']} update(s), {len(bank['labels'])} photos: {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
