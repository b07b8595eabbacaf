"""A small REAL feature cache for the head / scoring / report tests, in the format `featkit extract` writes.

Real Food-101 photos (first CLASSES classes, official order) decoded at SIZE px through featkit's one image path
and run through the real MobileNetV2 ONNX graph. Train photos are split into "train" and a carved-out "valid";
"test" comes from the official test list. Built once per test session (the file is reused if present).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from conftest import MOBILENET_ONNX, _require, read_food_photos

from featkit.backbones.base import file_sha256

CLASSES = 8
TRAIN_PER_CLASS = 30  # 24 train + 6 valid
VALID_PER_CLASS = 6
TEST_PER_CLASS = 10
SIZE = 96


def backbone_spec(name: str = "mobilenet-v2", size: int = SIZE) -> dict:
    path = _require(MOBILENET_ONNX)
    return {
        "kind": "onnx",
        "name": name,
        "weights": {"path": str(path), "sha256": file_sha256(path)},
        "size": size,
        "pooling": "avg",
        "feature_dim": 1280,
        "preprocessing": "in-graph",
        "versions": {"featkit": "0.1.0", "onnxruntime": "1.32.0"},
    }


def _features(photos: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(_require(MOBILENET_ONNX)), opts, providers=["CPUExecutionProvider"])
    return np.concatenate(
        [sess.run(["features"], {"images": photos[i : i + 64]})[0] for i in range(0, len(photos), 64)]
    )


def _decode(blobs: list[bytes]) -> np.ndarray:
    from featkit.data.images import decode_image

    return np.stack([decode_image(b, SIZE) for b in blobs])


def _class_list(names: list[str]) -> list[dict]:
    return [{"index": i, "id": c, "name": c.replace("_", " ").capitalize()} for i, c in enumerate(names)]


class FoodCaches:
    """Paths of the built caches: plain (train/valid/test), flip / rot90 sensitivity views of the test photos,
    an augmented view of the training photos, the mirrored valid + test photos (`tta-flip.h5`, as
    `extract --tta flip` writes it beside plain.h5), and the class list."""

    def __init__(self, root: Path):
        self.root = root
        self.plain = root / "plain.h5"
        self.flip = root / "view-flip.h5"
        self.rot = root / "view-rot90.h5"
        self.augment = root / "augment.h5"
        self.tta = root / "tta-flip.h5"

    def build(self) -> FoodCaches:
        from featkit.core.schema import CacheMeta
        from featkit.features.cache import write_cache as write_cache_meta

        def write_cache(path, features, labels, split, ids, meta, **kw):  # the fixture speaks plain dicts
            return write_cache_meta(path, features, labels, split, ids, CacheMeta.from_dict(meta), **kw)

        if all(p.exists() for p in (self.plain, self.flip, self.rot, self.augment, self.tta)):
            return self
        tr_names, tr_blobs, tr_labels = read_food_photos(CLASSES, TRAIN_PER_CLASS, "train")
        te_names, te_blobs, te_labels = read_food_photos(CLASSES, TEST_PER_CLASS, "test")
        class_ids = list(dict.fromkeys(n.split("/")[0] for n in tr_names))  # official order
        # labels from read_food_photos are official class indices; the first CLASSES classes are 0..CLASSES-1
        assert sorted(set(tr_labels.tolist())) == list(range(CLASSES))
        classes = _class_list(class_ids)
        tr_photos, te_photos = _decode(tr_blobs), _decode(te_blobs)
        tr_feats, te_feats = _features(tr_photos), _features(te_photos)
        rank = np.concatenate([np.arange(TRAIN_PER_CLASS)] * CLASSES)
        tr_split = np.where(rank >= TRAIN_PER_CLASS - VALID_PER_CLASS, "valid", "train")
        fingerprint = hashlib.sha256("\n".join(tr_names + te_names).encode()).hexdigest()[:16]
        meta = {
            "backbone": backbone_spec(),
            "size": SIZE,
            "view": "plain",
            "view_params": None,
            "classes": classes,
            "dataset": "food101-64",
            "fingerprint": fingerprint,
            "featkit_version": "0.1.0",
            "seconds": 1.5,
            "resize": "stretch",
            "crop_box": False,
        }
        write_cache(
            self.plain,
            np.concatenate([tr_feats, te_feats]),
            np.concatenate([tr_labels, te_labels]),
            np.concatenate([tr_split, np.full(len(te_labels), "test")]),
            tr_names + te_names,
            meta,
        )
        for path, view, params, op in (
            (
                self.flip,
                "flip",
                {
                    "name": "flip",
                    "rotation": 0.0,
                    "width_shift": 0.0,
                    "height_shift": 0.0,
                    "horizontal_flip": True,
                    "vertical_flip": False,
                },
                lambda a: a[:, :, ::-1],
            ),
            (
                self.rot,
                "rot90",
                {
                    "name": "rot90",
                    "rotation": 90.0,
                    "width_shift": 0.0,
                    "height_shift": 0.0,
                    "horizontal_flip": False,
                    "vertical_flip": False,
                },
                lambda a: np.rot90(a, 1, axes=(1, 2)),
            ),
        ):
            write_cache(
                path,
                _features(np.ascontiguousarray(op(te_photos))),
                te_labels,
                np.full(len(te_labels), "test"),
                te_names,
                {**meta, "view": view, "view_params": params, "seconds": 0.5},
            )
        held = tr_split == "valid"
        write_cache(
            self.tta,
            _features(np.ascontiguousarray(np.concatenate([tr_photos[held], te_photos])[:, :, ::-1])),
            np.concatenate([tr_labels[held], te_labels]),
            np.concatenate([tr_split[held], np.full(len(te_labels), "test")]),
            [n for n, h in zip(tr_names, held, strict=True) if h] + te_names,
            {**meta, "view": "tta-flip", "view_params": {"name": "tta-flip", "mirror": "horizontal"}, "seconds": 0.6},
        )
        # augmented training view: one flipped copy of each train photo (valid photos excluded, like extract)
        m = tr_split == "train"
        write_cache(
            self.augment,
            _features(np.ascontiguousarray(tr_photos[m][:, :, ::-1])),
            tr_labels[m],
            np.full(int(m.sum()), "train"),
            [n for n, keep in zip(tr_names, m, strict=True) if keep],
            {
                **meta,
                "view": "augment-1-flips",
                "view_params": {"name": "augment-1-flips", "horizontal_flip": True},
                "seconds": 0.7,
            },
            copy=np.zeros(int(m.sum()), np.int16),
        )
        return self


def food_caches(tmp_path_factory) -> FoodCaches:
    """Build (once per session; shared between test modules through the base temp dir) and return the caches."""
    root = tmp_path_factory.getbasetemp() / "food-caches"
    root.mkdir(exist_ok=True)
    return FoodCaches(root).build()


def one_blas_thread():
    """Context: BLAS on one thread. The test machine's 2 cores are shared, and a 2-thread BLAS spinning against
    other processes is 10-30x slower on these small matrices; results do not depend on it."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")
