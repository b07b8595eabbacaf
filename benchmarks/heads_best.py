"""The best combination featkit finds with ONE `featkit sweep` command, beside the best hand-written script.

    python benchmarks/heads_best.py --cache cache            # extracts what is missing first (several minutes)
    python benchmarks/heads_best.py --cache cache --skip-baseline
    python benchmarks/heads_best.py --sizes 224 --no-tta-at 224 --combine backbones   # fewer caches

The hand-written baseline is fitted in this process while the sweep runs in a subprocess (both on the same
cores), so both wall times include the other's load.

Hand-written baseline: scikit-learn StandardScaler + LogisticRegression(C=0.05) on the 224 px features of both
shared backbones (MobileNetV2 and EfficientNet-Lite0, ONNX) concatenated, trained on all official training photos
(train + valid), scored on the official test photos.

featkit: one `featkit sweep` over both backbones at 128 and 224 px (each size's backbones concatenated, and all
four caches concatenated), the mirrored test-time view, logreg and softmax heads (each searching its own setting on
valid, calibrated, refitted on train + valid), and ensembles of the best runs; the selected row is chosen on the
validation split only. Runs go to a temporary reports folder (or --reports).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FEATKIT_SHARED", REPO.parent / "shared"))
BACKBONES = ("mobilenet-v2", "efficientnet-lite0")
SIZES = (128, 224)
# each candidate runs its head's own search on valid (logreg: C in 0.001, 0.003, 0.01; softmax: lr in 1e-4, 3e-4),
# then refits on train + valid; a hidden layer lost 3.5 points to none on these concatenated features
HEADS = {"logreg": {}, "softmax": {"hidden": ["0"]}}
ENSEMBLE = 4


def extract_all(
    data: Path, cache: Path, wanted: dict[str, list[int]], no_tta: list[int]
) -> dict[tuple[str, int], Path]:
    from featkit.data import prepare
    from featkit.features.extract import ExtractOptions, extract

    prep = prepare(data, cache_dir=cache)
    out = {}
    for size in sorted({s for sizes in wanted.values() for s in sizes}, reverse=True):
        for name in [b for b in BACKBONES if size in wanted[b]]:
            opts = ExtractOptions(
                backbone=str(SHARED / "models" / f"{name}.onnx"), size=size, tta=() if size in no_tta else ("flip",)
            )
            views = {r.view: r for r in extract(prep, opts, cache_dir=cache)}
            out[name, size] = Path(views["plain"].path)
            print(
                f"  {name} {size} px: " + ", ".join(f"{v} {r.status} ({r.seconds:.0f} s)" for v, r in views.items()),
                flush=True,
            )
    return out


def baseline(paths: list[Path]) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    from featkit.features.combine import concat_caches
    from featkit.runs.calibration import ece
    from featkit.runs.metrics import log_loss, topk_accuracy

    fs = concat_caches(paths)
    train = fs.split != "test"  # the official training photos: featkit's train + valid
    t0 = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):  # like each sweep worker (joblib gives each one core's share)
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=1000)).fit(
            fs.features[train], fs.labels[train]
        )
    fit_s = time.perf_counter() - t0
    probs = model.predict_proba(fs.features[~train])
    labels = fs.labels[~train]
    acc = topk_accuracy(probs, labels, (1, 5))
    return {
        "name": "hand-written logreg C=0.05, both backbones 224 px",
        "top1": acc[1],
        "top5": acc[5],
        "log_loss": log_loss(probs, labels),
        "ece": ece(probs, labels),
        "seconds": fit_s,
        "n_train": int(train.sum()),
    }


def _num(value, width: int, digits: int) -> str:
    return f"{value:>{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SHARED / "data" / "food101-64.zip")
    ap.add_argument("--cache", type=Path, default=Path("cache"))
    ap.add_argument("--reports", type=Path, default=None)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="sizes of every backbone")
    ap.add_argument(
        "--sizes-of",
        action="append",
        default=[],
        metavar="BACKBONE=S1,S2",
        help="other sizes for one backbone, e.g. mobilenet-v2=128,224",
    )
    ap.add_argument(
        "--combine", nargs="+", default=["backbones", "all"], help="cache sets (see featkit sweep --combine)"
    )
    ap.add_argument(
        "--tta",
        choices=("both", "on"),
        default="on",
        help="where the mirrored view exists: candidates only with it (on), or also without (both: "
        "the same fits twice, to show what the view adds)",
    )
    ap.add_argument("--no-tta-at", type=int, nargs="*", default=[], help="sizes without the mirrored view")
    args = ap.parse_args()
    wanted = {b: list(args.sizes) for b in BACKBONES}
    for item in args.sizes_of:
        b, _, sizes = item.partition("=")
        wanted[b] = [int(s) for s in sizes.split(",")]
    reports = args.reports or Path(tempfile.mkdtemp(prefix="featkit-best-"))

    print("caches (plain + mirrored valid/test view):", flush=True)
    caches = extract_all(args.data, args.cache, wanted, args.no_tta_at)

    # the grid: each size's backbones concatenated, and every cache concatenated, each head, with the mirrored
    # view wherever every cache of the set has it (and without it)
    from featkit.apps.sweep import cache_sets, grid

    candidates = []
    for caches_set in cache_sets(list(caches.values()), args.combine):
        has_tta = all(Path(p).with_name("tta-flip.h5").exists() for p in caches_set)
        candidates += grid(
            HEADS, [caches_set], ({"both": [None, "flip"], "on": ["flip"]}[args.tta] if has_tta else [None])
        )
    reports.mkdir(parents=True, exist_ok=True)
    cand_file = reports / "heads-best-candidates.json"
    cand_file.write_text(json.dumps([c.__dict__ for c in candidates], indent=1, default=list))
    cmd = [
        sys.executable,
        "-m",
        "featkit.cli",
        "sweep",
        "--candidates",
        str(cand_file),
        "--ensemble",
        str(ENSEMBLE),
        "--jobs",
        str(args.jobs),
        "--name",
        "heads-best",
        "--reports",
        str(reports),
        "--json",
        "--quiet",
    ]
    print("\n$ featkit " + shlex.join(cmd[3:]), flush=True)
    t0 = time.perf_counter()
    errlog = open(reports / "sweep-stderr.log", "w")
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=errlog, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    base = None if args.skip_baseline else baseline([caches[b, 224] for b in BACKBONES])
    if base:
        print(f"  baseline done: top-1 {base['top1']:.4f} in {base['seconds']:.0f} s", flush=True)
    stdout, _ = proc.communicate()
    sweep_s = time.perf_counter() - t0
    errlog.close()
    if proc.returncode:
        sys.exit(f"the sweep failed:\n{(reports / 'sweep-stderr.log').read_text()[-3000:]}")
    out = json.loads(stdout)

    rows = []
    for r in out["rows"]:
        if r.get("error"):
            print(f"  failed: {r['candidate']}: {r['error']}")
            continue
        rows.append(r)
    rows.sort(key=lambda r: -r["valid_top1"])

    print(
        f"\n{out['sweep']}: {len(out['rows'])} rows in {sweep_s:.0f} s (whole sweep, {args.jobs} jobs, "
        f"{os.cpu_count()} cores); selected by validation top-1 only\n"
    )
    head = f"{'':<3}{'candidate':<78}{'valid top-1':>12}{'top-1':>8}{'top-5':>8}{'log loss':>9}{'ECE':>7}{'fit s':>8}"
    print(head)
    if base:
        print(
            f"{'':<3}{base['name'] + ' (' + format(base['n_train'], ',') + ' train photos)':<78}{'-':>12}"
            f"{base['top1']:>8.4f}{base['top5']:>8.4f}{base['log_loss']:>9.3f}{base['ece']:>7.3f}{base['seconds']:>8.0f}"
        )
    for r in rows:
        mark = "*" if r["selected"] else ""
        print(
            f"{mark:<3}{r['candidate'][:77]:<78}{_num(r['valid_top1'], 12, 4)}{_num(r['top1'], 8, 4)}"
            f"{_num(r['top5'], 8, 4)}{_num(r['log_loss'], 9, 3)}{_num(r['ece'], 7, 3)}{_num(r['fit_seconds'], 8, 0)}"
        )
    sel = next(r for r in rows if r["selected"])
    if base:
        print(
            f"\nselected vs hand-written: top-1 {sel['top1']:.4f} vs {base['top1']:.4f} "
            f"({sel['top1'] - base['top1']:+.4f}), top-5 {sel['top5']:.4f} vs {base['top5']:.4f} "
            f"({sel['top5'] - base['top5']:+.4f}); sweep {sweep_s:.0f} s vs baseline fit {base['seconds']:.0f} s"
        )
    print(f"sweep table: {reports}/sweeps/{out['sweep']}/sweep.md")


if __name__ == "__main__":
    main()
