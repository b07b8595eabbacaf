"""Which views an extraction makes and where they live: one `ViewJob` per view (its manifest rows, augmentation
copies, perturbation and file), the folder a set of options writes to, and the finished caches beside a plain one.

Views, one HDF5 file each, under cache/features/<dataset>-<split>/<backbone>-<weights>-<size>-<pooling>-<resize>/:
  plain.h5                    every photo of the manifest (train, valid and test)
  augment-<N>.h5              N randomly transformed copies of each training photo
  sens-*.h5                   the test photos under each perturbation of the robustness study
  tta-flip.h5                 the valid and test photos mirrored left-right (`--tta flip`)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from featkit.backbones import BackboneSpec
from featkit.core.errors import FeatkitError
from featkit.data import Prepared
from featkit.data.augment import SENSITIVITY_VIEWS, TTA_VIEWS, Mirror, Perturbation, augment_view
from featkit.features.cache import read_meta
from featkit.features.options import ExtractOptions, rebuild_command, resolve_backbone


@dataclass
class ViewJob:
    name: str
    rows: np.ndarray  # manifest row per output row
    copies: np.ndarray  # copy index per output row (augmented views)
    perturbation: Perturbation | Mirror | None
    path: Path

    @property
    def partial(self) -> Path:
        """The folder its chunks are saved in until the view is assembled."""
        return self.path.with_name(self.path.stem + ".partial")


def cache_slug(spec: BackboneSpec, opts: ExtractOptions) -> str:
    crop = "-box" if opts.crop_box else ""
    full = "-fulldecode" if opts.decode == "full" else ""  # draft (the default) keeps the folder names it had
    return f"{spec.slug()}-{spec.size}px-{opts.pooling}-{opts.resize}{crop}{full}"


def features_dir(prep: Prepared, opts: ExtractOptions, cache_dir: str | Path = "cache") -> Path:
    return Path(cache_dir) / "features" / prep.key / cache_slug(resolve_backbone(opts), opts)


def find_plain_cache(prep: Prepared, opts: ExtractOptions, cache_dir: str | Path = "cache") -> Path:
    """The finished plain-view cache these options extracted, or one line giving the `featkit extract` command that
    makes that very cache (options.rebuild_command), and, for a Keras name with the same name's ONNX model in the
    models folder, that model (a Keras download fails offline)."""
    path = features_dir(prep, opts, cache_dir) / "plain.h5"
    if not path.exists():
        command = rebuild_command(prep, opts, resolve_backbone(opts), cache_dir)
        raise FeatkitError(f"{path} does not exist: run `{command}` first{_onnx_hint(opts)}.")
    if opts.precision == "int8" and (read_meta(path).identity or {}).get("int8_kernels") != EXACT_INT8_KERNELS:
        command = rebuild_command(prep, opts, resolve_backbone(opts), cache_dir)
        raise FeatkitError(
            f"{path} holds int8 features made before featkit asked onnxruntime for exact int8 kernels (on CPUs "
            f"without VNNI the fast ones lose precision): run `{command}` to make it again."
        )
    return path


def _onnx_hint(opts: ExtractOptions) -> str:
    from featkit.backbones.names import models_dir, onnx_models

    if opts.backbone.lower().endswith(".onnx"):
        return ""
    key = re.sub(r"[^a-z0-9]", "", opts.backbone.lower().removeprefix("keras:"))
    try:
        same = [n for n in onnx_models(models_dir()) if re.sub(r"[^a-z0-9]", "", n.lower()) == key]
    except FeatkitError:
        return ""
    if not same:
        return ""
    return (
        f"; --backbone {opts.backbone} is Keras' model (Keras downloads its weights), the ONNX model of that "
        f"name in the models folder is --backbone {same[0]}"
    )


def augment_caches(plain: Path) -> list[Path]:
    """The finished augmented views beside a plain-view cache, oldest name first."""
    return sorted(Path(plain).parent.glob("augment-*.h5"))


def sensitivity_caches(plain: Path) -> dict[str, Path]:
    """{view: path} of the finished sensitivity views beside a plain-view cache, in the study's order."""
    folder = Path(plain).parent
    return {v.name: folder / f"{v.name}.h5" for v in SENSITIVITY_VIEWS if (folder / f"{v.name}.h5").exists()}


def plan_views(prep: Prepared, opts: ExtractOptions, out_dir: Path) -> list[ViewJob]:
    split = prep.manifest["split"].to_numpy()
    all_rows = np.arange(len(split))
    train, test = all_rows[split == "train"], all_rows[split == "test"]
    jobs = []
    if opts.plain:
        jobs.append(ViewJob("plain", all_rows, np.zeros(len(all_rows), np.int64), None, out_dir / "plain.h5"))
    if opts.augment:
        view = augment_view(opts.rotation, opts.shift, opts.flips, opts.flips)
        rows = np.tile(train, opts.augment)
        copies = np.repeat(np.arange(opts.augment), len(train))
        name = f"augment-{opts.augment}-r{opts.rotation:g}-s{opts.shift:g}{'-flips' if opts.flips else ''}"
        jobs.append(ViewJob(name, rows, copies, view, out_dir / f"{name}.h5"))
    if opts.sensitivity:
        for p in SENSITIVITY_VIEWS:
            jobs.append(ViewJob(p.name, test, np.zeros(len(test), np.int64), p, out_dir / f"{p.name}.h5"))
    held_out = all_rows[np.isin(split, ("valid", "test"))]
    for t in opts.tta:
        m = TTA_VIEWS[t]
        jobs.append(ViewJob(m.name, held_out, np.zeros(len(held_out), np.int64), m, out_dir / f"{m.name}.h5"))
    return jobs


# int8 features made before featkit's sessions set session.x64quantprecision (backbones.onnx_model) may have lost
# precision in onnxruntime's saturating kernels: their identity lacks this key, so extract makes them again.
EXACT_INT8_KERNELS = "exact"


def job_identity(prep: Prepared, spec: BackboneSpec, opts: ExtractOptions, job: ViewJob) -> dict[str, Any]:
    """What a view's file must have been made from to be up to date (stored as CacheMeta.identity)."""
    kernels = {"int8_kernels": EXACT_INT8_KERNELS} if opts.precision == "int8" else {}
    return {
        **kernels,
        "dataset": prep.key,
        "fingerprint": prep.fingerprint,
        "manifest_sha1": prep.manifest_sha1,
        "backbone": spec.comparable_key(),
        "resize": opts.resize,
        "crop_box": opts.crop_box,
        "decode": opts.decode,
        "dtype": opts.dtype,
        "seed": opts.seed,
        "view": job.name,
        "view_params": job.perturbation.to_dict() if job.perturbation else None,
        "rows": len(job.rows),
    }


def shard_path(path: Path, shard: tuple[int, int] | None) -> Path:
    """The file `extract --shard i/n` writes for the view whose complete file is `path`."""
    return path if shard is None else path.with_name(f"{path.stem}.shard-{shard[0]}-of-{shard[1]}.h5")


def all_shards_present(path: Path, shard: tuple[int, int]) -> bool:
    return all(shard_path(path, (i, shard[1])).exists() for i in range(shard[1]))


__all__ = [
    "ViewJob",
    "cache_slug",
    "features_dir",
    "find_plain_cache",
    "augment_caches",
    "sensitivity_caches",
    "plan_views",
    "job_identity",
    "shard_path",
    "all_shards_present",
]
