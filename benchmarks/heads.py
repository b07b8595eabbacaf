"""Each featkit head with its defaults (search on valid, refit on train + valid, temperature) against the
hand-written scikit-learn script, side by side in one run: top-1 / top-5, log loss, ECE and seconds.

    python benchmarks/heads.py                    # food101-64, MobileNetV2 ONNX at 128 px (extracts if needed)
    python benchmarks/heads.py --heads logreg knn --cache /work/cache-18
    python benchmarks/heads.py --augment-copies 2 # also each head trained with 2 augmented copies per photo

The hand-written script: standardise, LogisticRegression(C=0.05), fitted on all official training photos
(featkit's train + valid rows), scored on the same test photos; its probabilities are not calibrated.
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
HEADS = ["logreg", "softmax", "lightgbm", "knn"]


def hand_written(plain: Path) -> dict:
    """The ten-line script of issue 18, timed from the arrays in memory."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from featkit.features.cache import read_cache
    from featkit.runs.calibration import ece, log_loss
    from featkit.runs.metrics import topk_accuracy

    data = read_cache(plain)
    fit = np.isin(data.split, ["train", "valid"])
    test = data.subset("test")
    t0 = time.perf_counter()
    scaler = StandardScaler().fit(data.features[fit])
    clf = LogisticRegression(C=0.05, max_iter=1000).fit(scaler.transform(data.features[fit]), data.labels[fit])
    seconds = time.perf_counter() - t0
    probs = clf.predict_proba(scaler.transform(test.features))
    acc = topk_accuracy(probs, test.labels)
    return {
        "name": "hand-written logreg C=0.05",
        "rows": int(fit.sum()),
        "top1": acc[1],
        "top5": acc[5],
        "log_loss": log_loss(probs, test.labels),
        "ece": ece(probs, test.labels),
        "seconds": seconds,
        "chosen": "C=0.05",
        "T": None,
        "valid_top1": None,
    }


def _line(r: dict) -> str:
    t = f"{r['T']:6.3f}" if r["T"] is not None else "     -"
    before = f"{r['before']['log_loss']:.3f} / {r['before']['ece']:.3f}" if "before" in r else "-"
    valid = f"{r['valid_top1']:8.4f}" if r["valid_top1"] is not None else "       -"
    return (
        f"{r['name']:<28}{valid}{r['rows']:>9,}{r['top1']:>8.4f}{r['top5']:>8.4f}{r['log_loss']:>9.3f}{r['ece']:>7.3f}"
        f"{r['seconds']:>9.1f}  {t}  {before:<29} {r['chosen']}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SHARED / "data" / "food101-64.zip")
    ap.add_argument("--backbone", default=str(SHARED / "models" / "mobilenet-v2.onnx"))
    ap.add_argument("--weights", default="imagenet")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--cache", type=Path, default=Path("cache"))
    ap.add_argument("--reports", type=Path, default=None)
    ap.add_argument("--heads", nargs="+", default=HEADS, choices=HEADS)
    ap.add_argument("--no-script", action="store_true", help="skip the hand-written scikit-learn script")
    ap.add_argument(
        "--augment-copies", type=int, default=0, help="also fit each head with N augmented copies per photo"
    )
    args = ap.parse_args()

    from featkit.data import prepare
    from featkit.features.extract import ExtractOptions, extract
    from featkit.heads.fit import fit_head

    prep = prepare(args.data, cache_dir=args.cache)
    opts = ExtractOptions(backbone=args.backbone, size=args.size, weights=args.weights, augment=args.augment_copies)
    views = {r.view: r for r in extract(prep, opts, cache_dir=args.cache)}
    plain = views["plain"].path
    aug = next((r.path for v, r in views.items() if v.startswith("augment")), None)
    reports = args.reports or Path(tempfile.mkdtemp(prefix="featkit-heads-"))

    rows = [] if args.no_script else [hand_written(plain)]
    if rows:
        print(f"  done: {_line(rows[0])}", flush=True)
    for head in args.heads:
        for aug_path in [None] + ([aug] if aug else []):
            t0 = time.perf_counter()
            run = fit_head(plain, head=head, augment_cache=aug_path, reports=reports, quiet=True)
            wall = time.perf_counter() - t0
            m, cfg = run.metrics.to_dict(), run.config
            chosen = ", ".join(f"{k}={v}" for k, v in cfg.extra["search"]["chosen"].items()) or "defaults"
            rows.append(
                {
                    "name": f"featkit {head}" + (f" +aug{args.augment_copies}" if aug_path else ""),
                    "rows": m["n_train"],
                    "top1": m["top1"],
                    "top5": m["top5"],
                    "log_loss": m["log_loss"],
                    "ece": m["ece"],
                    "seconds": wall,
                    "chosen": chosen,
                    "valid_top1": m.get("valid_top1"),
                    "T": m["calibration"]["temperature"],
                    "before": m["calibration"]["before"],
                }
            )
            print(f"  done: {_line(rows[-1])}", flush=True)

    print(f"\n{Path(plain).parent.name}: {views['plain'].photos:,} photos, {os.cpu_count()} cores")
    print(
        f"{'head':<28}{'valid':>8}{'fit rows':>9}{'top-1':>8}{'top-5':>8}{'log loss':>9}{'ECE':>7}{'seconds':>9}  "
        f"{'T':>6}  uncalibrated log loss / ECE   chosen"
    )
    for r in rows:
        print(_line(r))
    if rows and not args.no_script:
        base = rows[0]
        for r in rows[1:]:
            print(
                f"{r['name']}: top-1 {r['top1'] - base['top1']:+.4f}, top-5 {r['top5'] - base['top5']:+.4f} "
                f"against the hand-written script; time ratio {r['seconds'] / base['seconds']:.2f}"
            )
    print(f"runs in {reports}/runs")


if __name__ == "__main__":
    main()
