"""The toolkit's promise, measured: a frozen backbone + dense head trained end to end against the same head fitted
on features cached from the same backbone and weights, on the same splits, side by side in one run.

    python benchmarks/transfer_vs_head.py                       # MobileNetV2 with the shared ImageNet weights, 128 px
    python benchmarks/transfer_vs_head.py --epochs 3 --per-class 100

Both paths use Keras MobileNetV2 with ../shared/models/keras/mobilenet_v2_1.00_224_notop.weights.h5, global
average pooling, Dense 1024 relu, dropout 0.5, softmax, RMSprop. Runs go to --reports (default: a temp folder).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FEATKIT_SHARED", REPO.parent / "shared"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SHARED / "data" / "food101-64.zip")
    ap.add_argument(
        "--weights", type=Path, default=SHARED / "models" / "keras" / "mobilenet_v2_1.00_224_notop.weights.h5"
    )
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=3, help="epochs of the end-to-end transfer model")
    ap.add_argument("--per-class", type=int, default=None, help="first N photos per class and split (default: all)")
    ap.add_argument("--cache", type=Path, default=Path("cache"))
    ap.add_argument("--reports", type=Path, default=None)
    args = ap.parse_args()

    from featkit.cnn import get_preset, train_cnn
    from featkit.data import prepare
    from featkit.data.arrays import decoded_arrays, subset_rows
    from featkit.features.cache import read_cache, write_cache
    from featkit.features.extract import ExtractOptions, extract
    from featkit.heads.fit import fit_head
    from featkit.runs.store import new_run

    reports = args.reports or Path(tempfile.mkdtemp(prefix="featkit-transfer-"))
    prep = prepare(args.data, cache_dir=args.cache)
    rows = subset_rows(prep, args.per_class)

    # 1. cached features, then the softmax head
    (res,) = extract(
        prep, ExtractOptions(backbone="mobilenetv2", size=args.size, weights=str(args.weights)), cache_dir=args.cache
    )
    extract_s = res.seconds  # of the extraction that made the cache, also when it was made earlier
    cache = Path(res.path)
    if args.per_class:  # the same photos as the end-to-end model
        fs = read_cache(cache)
        keep = np.isin(fs.row, rows)
        cache = cache.with_name(f"plain-per-class-{args.per_class}.h5")
        write_cache(
            cache,
            fs.features[keep],
            fs.labels[keep],
            fs.split[keep],
            fs.image_ids[keep],
            fs.meta.replace(view=f"plain-per-class-{args.per_class}"),
            row=fs.row[keep],
        )
    t0 = time.perf_counter()
    head = fit_head(cache, "softmax", {"hidden": 1024, "dropout": 0.5}, reports=reports)
    head_s = time.perf_counter() - t0

    # 2. the end-to-end frozen transfer model
    cfg = get_preset(
        "vgg16-transfer-128",
        backbone="mobilenetv2",
        weights=str(args.weights),
        size=args.size,
        epochs=args.epochs,
        dropout=0.5,
    ).replace(name="mobilenetv2-transfer")
    t0 = time.perf_counter()
    x = decoded_arrays(prep, rows, args.size)
    m = prep.manifest.iloc[rows]
    split, y = m["split"].to_numpy(), m["label"].to_numpy()
    part = {s: np.flatnonzero(split == s) for s in ("train", "valid", "test")}
    run = train_cnn(
        cfg,
        x[part["train"]],
        y[part["train"]],
        x[part["valid"]],
        y[part["valid"]],
        x[part["test"]],
        y[part["test"]],
        prep.classes,
        new_run("mobilenetv2-transfer", reports),
        extra_config={"dataset": prep.key, "fingerprint": prep.fingerprint},
        test_ids=m["image_id"].to_numpy()[part["test"]],
    )
    transfer_s = time.perf_counter() - t0

    hm, tm = head.metrics.to_dict(), run.metrics.to_dict()
    print(
        f"\nMobileNetV2 (shared ImageNet weights) at {args.size} px, {len(part['train']):,} train / "
        f"{len(part['valid']):,} valid / {len(part['test']):,} test photos, {os.cpu_count()} cores"
    )
    print(f"{'path':<44}{'top-1':>8}{'top-5':>8}{'wall s':>9}")
    print(f"{'cached features + softmax head (extract)':<44}{'':>8}{'':>8}{extract_s:>9.0f}")
    print(
        f"{'cached features + softmax head (fit)':<44}{hm['top1']:>8.4f}{hm['top5']:>8.4f}{head_s:>9.0f}"
        f"   ({hm.get('best_epoch', '?')} best epoch)"
    )
    print(
        f"{f'end-to-end frozen transfer, {args.epochs} epochs':<44}"
        f"{tm['top1']:>8.4f}{tm['top5']:>8.4f}{transfer_s:>9.0f}"
    )
    print(f"runs in {reports}/runs")


if __name__ == "__main__":
    main()
