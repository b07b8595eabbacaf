"""Static int8 quantisation of an ONNX backbone, calibrated on training photos only.

onnxruntime's `quantize_static` (QDQ format, per-channel int8 weights, uint8 activations, MinMax calibration)
after its `quant_pre_process` (shape inference and graph optimisation). The calibration photos are a seeded
sample of the TRAINING split of the manifest (never valid or test), decoded and preprocessed exactly as
`featkit extract` feeds the model (`featkit.data.arrays.load_rows`, then the ONNX backbone's own `feed`).

The int8 model is written with its JSON contract beside it (same stem): the source contract's fields, plus
`precision`, the int8 file's `sha256`, and `quantization` (method and settings, the source model's path and
sha256, the calibration dataset, size and photos' image ids). It is a backbone like any other:
`featkit extract --backbone model.int8.onnx`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from featkit.backbones.base import file_sha256
from featkit.core.errors import FeatkitError
from featkit.core.fileio import atomic_path, read_json, write_json
from featkit.core.progress import Progress
from featkit.core.schema import OnnxContract
from featkit.data import Prepared
from featkit.data.arrays import load_rows
from featkit.features.options import ExtractOptions

DEFAULT_PHOTOS = 512
CALIBRATION_BATCH = 32
METHOD = {
    "tool": "onnxruntime.quantization.quantize_static",
    "format": "QDQ",
    "per_channel": True,
    "weight_type": "QInt8",
    "activation_type": "QUInt8",
    "calibrate_method": "MinMax",
    "reduce_range": False,
    "preprocess": "onnxruntime.quantization.quant_pre_process (skip_symbolic_shape)",
}


@dataclass
class QuantizeResult:
    path: str
    contract: str
    source: str
    status: str  # "quantized" or "up to date"
    photos: int
    size: int
    skipped: int  # calibration photos that could not be decoded
    seconds: float


def calibration_rows(prep: Prepared, photos: int, seed: int) -> np.ndarray:
    """A seeded sample of `photos` manifest rows of the training split (sorted)."""
    if photos < 1:
        raise FeatkitError(f"--photos should be at least 1 calibration photo; got {photos}.")
    train = np.flatnonzero(prep.manifest["split"].to_numpy() == "train")
    if not len(train):
        raise FeatkitError(
            f"{prep.manifest_path} has no training photos to calibrate on: quantisation never uses "
            f"valid or test photos; give a dataset with a train split."
        )
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(train, min(photos, len(train)), replace=False))


def calibration_settings(source: Path, prep: Prepared, size: int, photos: int, opts: ExtractOptions) -> dict:
    """What the int8 model depends on, besides the quantisation method."""
    return {
        "source_sha256": file_sha256(source),
        "dataset": prep.key,
        "fingerprint": prep.fingerprint,
        "manifest_sha1": prep.manifest_sha1,
        "split": "train",
        "photos_requested": photos,
        "size": size,
        "resize": opts.resize,
        "crop_box": opts.crop_box,
        "decode": opts.decode,
        "seed": opts.seed,
    }


def default_int8_path(source: Path, settings: dict, cache_dir: str | Path) -> Path:
    key = hashlib.sha1(json.dumps([settings, METHOD], sort_keys=True).encode()).hexdigest()[:10]
    return Path(cache_dir) / "models" / f"{source.stem}.int8-{key}.onnx"


def _onnx_source(opts: ExtractOptions, cache_dir: str | Path, convert: bool = False, quiet: bool = False) -> Path:
    """The .onnx file `--precision int8` works from: the backbone itself, or a Keras backbone's ONNX copy in
    cache/models/ (made once with tf2onnx when `convert`); one line saying what to give instead."""
    from featkit.backbones.keras_zoo import is_keras_name

    if is_keras_name(opts.backbone):
        from featkit.backbones.to_onnx import keras_onnx

        return keras_onnx(opts.backbone, opts.size, opts.weights, opts.pooling, cache_dir, quiet=quiet, convert=convert)
    backbone = Path(opts.backbone).expanduser()
    if backbone.suffix.lower() != ".onnx":
        raise FeatkitError(
            f"--precision int8 needs an ONNX backbone (a .onnx path) or a Keras name from `featkit backbones`; "
            f"{opts.backbone!r} is neither: use --precision float32."
        )
    if not backbone.is_file():
        raise FeatkitError(f"{backbone} does not exist: give the path of an .onnx model.")
    return backbone


def int8_model(prep: Prepared, opts: ExtractOptions, cache_dir: str | Path) -> Path:
    """The int8 model `featkit extract --precision int8` extracts with for these options: the backbone itself when
    it is already int8, else its int8 copy in cache/models/; one line saying how to make it when there is none."""
    from featkit.backbones.onnx_model import OnnxBackbone, read_contract

    source = _onnx_source(opts, cache_dir)
    if read_contract(source).precision == "int8":
        return source
    size = OnnxBackbone(source, size=opts.size).size
    settings = calibration_settings(source.resolve(), prep, size, DEFAULT_PHOTOS, opts)
    path = default_int8_path(source, settings, cache_dir)
    if not is_complete(path, settings):
        raise FeatkitError(
            f"no int8 copy of {source.name} with these options in {Path(cache_dir) / 'models'}: run "
            f"`featkit extract --data {prep.dataset.source.path} --backbone {opts.backbone} "
            f"--precision int8{f' --size {opts.size}' if opts.size else ''}` first."
        )
    return path


def is_complete(path: Path, settings: dict) -> bool:
    """An int8 model made by featkit with these settings, whole (its file's sha256 matches its contract)."""
    contract = path.with_suffix(".json")
    if not (path.is_file() and contract.is_file()):
        return False
    try:
        meta = OnnxContract.from_dict(read_json(contract), where=str(contract))
    except (ValueError, FeatkitError):
        return False
    q = meta.quantization or {}
    return meta.sha256 == file_sha256(path) and q.get("settings") == settings and q.get("method") == METHOD


def quantize_onnx(
    source: str | Path,
    prep: Prepared,
    opts: ExtractOptions | None = None,
    photos: int = DEFAULT_PHOTOS,
    out: str | Path | None = None,
    cache_dir: str | Path = "cache",
    quiet: bool = False,
    log: Callable[[str], None] | None = None,
) -> QuantizeResult:
    """Quantise the ONNX model `source` to int8, calibrated on training photos of `prep` decoded as `opts`
    (size, resize, crop_box, decode, seed) would decode them for extraction. Reuses a complete int8 model with
    the same settings at `out` (default: cache/models/<stem>.int8-<settings hash>.onnx)."""
    from featkit.backbones.onnx_model import OnnxBackbone, read_contract

    log = log or (lambda msg: None if quiet else print(msg, file=sys.stderr))
    opts = opts or ExtractOptions()
    source = Path(source).expanduser()
    if source.suffix.lower() != ".onnx":
        raise FeatkitError(
            f"{source} is not an .onnx model: only ONNX backbones can be quantised "
            f"(export a Keras model to ONNX first)."
        )
    started = time.perf_counter()
    model = OnnxBackbone(source, size=opts.size)
    if model.precision != "float32":
        raise FeatkitError(
            f"{source} is already quantised ({model.precision}): quantise the float32 model it came from."
        )
    settings = calibration_settings(model.path, prep, model.size, photos, opts)
    chosen = out is not None  # by `quantize --out`; `extract --precision int8` uses the default path
    out = Path(out).expanduser() if out else default_int8_path(source, settings, cache_dir)
    if out.resolve() == model.path:
        raise FeatkitError(f"--out {out} is the source model itself: give another path.")
    _check_writable(out)  # a path under a file or a read-only folder fails now, before the calibration
    if is_complete(out, settings):
        done = read_contract(out)
        return QuantizeResult(
            str(out),
            str(out.with_suffix(".json")),
            str(model.path),
            "up to date",
            (done.quantization or {})["calibration_photos"],
            model.size,
            0,
            0.0,
        )
    for existing in (out, out.with_suffix(".json")):
        if existing.exists():
            raise FeatkitError(
                f"{existing} already exists and is not an int8 model made with these settings: "
                + ("give another --out, or delete it." if chosen else "delete it, and featkit makes it again.")
            )

    rows = calibration_rows(prep, photos, opts.seed)
    log(f"quantising {source.name} to int8: {len(rows)} training photos at {model.size} px for calibration")
    images, failures = load_rows(prep, rows, model.size, opts.resize, opts.crop_box, opts.decode)
    if failures:
        log(f"{len(failures)} calibration photos could not be decoded and are skipped (first: {failures[0]})")
        ok = np.setdiff1d(np.arange(len(rows)), [f.index for f in failures])
        rows, images = rows[ok], images[ok]
    if not len(rows):
        raise FeatkitError("no calibration photo could be decoded: run `featkit data check` on the dataset.")
    _quantize_static(model, images, out, quiet)

    contract = _int8_contract(
        read_contract(model.path), model, out, settings, prep.manifest["image_id"].to_numpy()[rows].tolist()
    )
    write_json(out.with_suffix(".json"), contract)  # last: a model without its contract is not taken as complete
    seconds = time.perf_counter() - started
    log(f"int8 model: {out} ({seconds:.1f} s)")
    return QuantizeResult(
        str(out),
        str(out.with_suffix(".json")),
        str(model.path),
        "quantized",
        len(rows),
        model.size,
        len(failures),
        round(seconds, 3),
    )


def _check_writable(out: Path) -> None:
    """Make out's folder and write a probe file in it; an OSError naming `out` when that is not possible."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe = out.parent / f".{out.stem}.probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), str(out)) from None


def _quantize_static(model, images: np.ndarray, out: Path, quiet: bool) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, bar: Progress):
            self.bar, self.start = bar, 0

        def get_next(self):
            if self.start >= len(images):
                return None
            chunk = images[self.start : self.start + CALIBRATION_BATCH]
            self.start += len(chunk)
            self.bar.update(len(chunk))
            return model.feed(chunk)

    with tempfile.TemporaryDirectory(prefix="featkit-quantize-") as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        try:
            quant_pre_process(str(model.path), str(pre), skip_symbolic_shape=True)
        except Exception as e:  # onnx / onnxruntime raise many kinds
            raise FeatkitError(
                f"{model.path} could not be prepared for quantisation ({' '.join(str(e).split())[:200]})."
            ) from None
        with atomic_path(out) as part, Progress(len(images), "calibrate", quiet=quiet) as bar:
            quantize_static(
                str(pre),
                str(part),
                Reader(bar),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                weight_type=QuantType.QInt8,
                activation_type=QuantType.QUInt8,
                reduce_range=METHOD["reduce_range"],
            )


def _int8_contract(
    source_contract: OnnxContract, model, out: Path, settings: dict, image_ids: list[str]
) -> dict[str, Any]:
    import onnxruntime as ort

    opts = model.options
    contract = source_contract.replace(
        name=f"{model.name}-int8",
        precision="int8",
        input_name=opts["onnx_input"],
        output_name=opts["onnx_output"],
        input_dtype=opts["input_dtype"],
        input_layout=opts["input_layout"],
        feature_size=model.feature_dim,
        input_size=source_contract.input_size or [model.native_size, model.native_size],
        preprocessing_in_graph=source_contract.preprocessing_in_graph
        or (model.preprocessing[len("in graph: ") :] if model.preprocessing.startswith("in graph: ") else None),
        file=out.name,
        sha256=file_sha256(out),
        extra={**source_contract.extra, "file_size_bytes": out.stat().st_size},
        quantization={
            "method": METHOD,
            "settings": settings,
            "onnxruntime": ort.__version__,
            "source_model": {"name": model.name, "path": str(model.path), "sha256": settings["source_sha256"]},
            "calibration_size": settings["size"],
            "calibration_photos": len(image_ids),
            "calibration_image_ids": image_ids,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    return contract.to_dict()


def ensure_int8(
    prep: Prepared,
    opts: ExtractOptions,
    cache_dir: str | Path,
    quiet: bool = False,
    log: Callable[[str], None] | None = None,
) -> Path:
    """`featkit extract --precision int8`: the int8 copy of the ONNX backbone in cache/models/, made once (a Keras
    backbone is first converted to ONNX, once, into cache/models/ too)."""
    from featkit.backbones.onnx_model import read_contract

    backbone = _onnx_source(opts, cache_dir, convert=True, quiet=quiet)
    if read_contract(backbone).precision == "int8":
        return backbone
    return Path(quantize_onnx(backbone, prep, opts, cache_dir=cache_dir, quiet=quiet, log=log).path)


__all__ = ["quantize_onnx", "ensure_int8", "int8_model", "calibration_rows", "QuantizeResult", "METHOD"]
