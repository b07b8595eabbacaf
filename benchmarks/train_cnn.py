"""Training images/s of the `benchmark-64` preset: featkit's decoded-array pipeline against the study's input
pipeline (Keras ImageDataGenerator.flow_from_directory reading and decoding JPEGs from class folders every epoch),
the same model, photos and batch size, measured in one run.

    python benchmarks/train_cnn.py                    # 20 classes x 100 training photos of the shared zip
    python benchmarks/train_cnn.py --classes 101 --per-class 100 --epochs 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FEATKIT_SHARED", REPO.parent / "shared"))


def class_folders(zip_path: Path, classes: int, per_class: int, dest: Path) -> Path:
    with zipfile.ZipFile(zip_path) as z:
        names = z.read("food-101/meta/classes.txt").decode().split()[:classes]
        train = z.read("food-101/meta/train.txt").decode().split()
        for c in names:
            (dest / c).mkdir(parents=True)
            for key in [k for k in train if k.split("/")[0] == c][:per_class]:
                (dest / c / (key.split("/")[1] + ".jpg")).write_bytes(z.read(f"food-101/images/{key}.jpg"))
    return dest


def timed_epochs(model, data, epochs: int) -> float:
    """Seconds for `epochs` full passes over `data`, after one warm-up epoch (graph tracing, first file reads)."""
    model.fit(data, epochs=1, verbose=0)
    t0 = time.perf_counter()
    model.fit(data, epochs=epochs, verbose=0)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SHARED / "data" / "food101-64.zip")
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--preset", default="benchmark-64")
    args = ap.parse_args()

    import tensorflow as tf

    from featkit.cnn import build_model, compile_model, get_preset
    from featkit.cnn.train import make_dataset, set_seed
    from featkit.data import prepare
    from featkit.data.arrays import decoded_arrays

    cfg = get_preset(args.preset)
    work = Path(tempfile.mkdtemp(prefix="featkit-bench-cnn-"))
    try:
        folder = class_folders(args.data, args.classes, args.per_class, work / "data")
        n = args.classes * args.per_class

        # the study's pipeline: JPEGs read, decoded and resized every epoch
        set_seed(0)
        gen = tf.keras.preprocessing.image.ImageDataGenerator().flow_from_directory(
            str(folder),
            target_size=(cfg.size, cfg.size),
            batch_size=cfg.batch_size,
            class_mode="categorical",
            shuffle=True,
            seed=0,
        )
        model = compile_model(build_model(cfg, args.classes), cfg)
        study_s = timed_epochs(model, gen, args.epochs)

        # featkit: decode once into a uint8 array (timed separately), then tf.data over the array
        t0 = time.perf_counter()
        prep = prepare(folder, cache_dir=work / "cache", split=None, quiet=True)
        x = decoded_arrays(prep, np.arange(len(prep.manifest)), cfg.size, quiet=True)
        decode_s = time.perf_counter() - t0
        y = prep.manifest["label"].to_numpy()
        set_seed(0)
        model = compile_model(build_model(cfg, args.classes), cfg)
        ds = make_dataset(np.asarray(x), y, args.classes, cfg.batch_size, shuffle=True)
        ours_s = timed_epochs(model, ds, args.epochs)

        images = n * args.epochs
        study_rate, ours_rate = images / study_s, images / ours_s
        print(
            f"preset {cfg.name}: {args.classes} classes x {args.per_class} photos at {cfg.size} px, batch "
            f"{cfg.batch_size}, {args.epochs} timed epochs, {os.cpu_count()} cores"
        )
        print(f"  study pipeline (ImageDataGenerator, JPEGs each epoch)  {study_rate:8.0f} images/s")
        print(f"  featkit (decoded uint8 array, tf.data, prefetch)       {ours_rate:8.0f} images/s")
        print(f"  ratio featkit / study                                  {ours_rate / study_rate:8.2f}")
        print(f"  one-off decode of {n:,} photos (incl. scan)              {decode_s:8.1f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
