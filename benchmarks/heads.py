"""Fit time and test top-1 / top-5 of each head on one feature cache, side by side in one run.

    python benchmarks/heads.py                    # food101-64, MobileNetV2 ONNX at 128 px (extracts if needed)
    python benchmarks/heads.py --augment 2        # also each head trained with 2 augmented copies per photo
    python benchmarks/heads.py --heads logreg softmax

Runs go to a temporary reports folder (or --reports), so they do not mix with your own.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FEATKIT_SHARED", REPO.parent / "shared"))

HEAD_PARAMS = {
    "logreg": {},
    "softmax": {"hidden": 1024, "dropout": 0.5},
    "lightgbm": {"pca": 128},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SHARED / "data" / "food101-64.zip")
    ap.add_argument("--backbone", default=str(SHARED / "models" / "mobilenet-v2.onnx"))
    ap.add_argument("--weights", default="imagenet")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--cache", type=Path, default=Path("cache"))
    ap.add_argument("--reports", type=Path, default=None)
    ap.add_argument("--heads", nargs="+", default=list(HEAD_PARAMS))
    ap.add_argument("--augment", type=int, default=0, help="also fit each head with N augmented copies per photo")
    args = ap.parse_args()

    from featkit.data import prepare
    from featkit.extract import ExtractOptions, extract
    from featkit.fit import fit_head

    prep = prepare(args.data, cache_dir=args.cache)
    opts = ExtractOptions(backbone=args.backbone, size=args.size, weights=args.weights, augment=args.augment)
    views = {r.view: r for r in extract(prep, opts, cache_dir=args.cache)}
    plain = views["plain"].path
    aug = next((r.path for v, r in views.items() if v.startswith("augment")), None)
    reports = args.reports or Path(tempfile.mkdtemp(prefix="featkit-heads-"))

    rows = []
    for head in args.heads:
        for aug_path in [None] + ([aug] if aug else []):
            t0 = time.perf_counter()
            run = fit_head(plain, head=head, params=HEAD_PARAMS.get(head, {}), augment_cache=aug_path, reports=reports,
                           quiet=True)
            wall = time.perf_counter() - t0
            m = run.metrics
            rows.append((head + (f" +aug{args.augment}" if aug_path else ""), m["n_train"], m["fit_seconds"], wall,
                         m["top1"], m["top5"]))
            print(f"  {rows[-1][0]:<18} done: top-1 {m['top1']:.4f}", flush=True)

    print(f"\n{Path(plain).parent.name}: {views['plain'].photos:,} photos, {os.cpu_count()} cores")
    print(f"{'head':<18}{'train rows':>11}{'fit s':>9}{'run s':>9}{'top-1':>9}{'top-5':>9}")
    for name, n, fit_s, wall, t1, t5 in rows:
        print(f"{name:<18}{n:>11,}{fit_s:>9.1f}{wall:>9.1f}{t1:>9.4f}{t5:>9.4f}")
    print(f"runs in {reports}/runs")


if __name__ == "__main__":
    main()
