"""Train a CNN preset end to end on decoded uint8 arrays and save a run folder (featkit/runs.py format).

Run folder (kind "cnn"):
  config.json, classes.json, model.keras (the best epoch by val_loss), history.csv, test_predictions.npz, metrics.json
  checkpoints/best.keras, checkpoints/last.keras, checkpoints/state.json   (for resume; each written atomically)

Resume: with resume=True and a checkpoints/state.json + last.keras of the same configuration, training continues
at the next epoch (model, optimizer state, best val_loss, early-stopping count and history.csv carry on).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from featkit.cnn.models import build_model, compile_model
from featkit.cnn.preprocess import channel_stats, fit_zca
from featkit.cnn.presets import Preset
from featkit.core.errors import DamagedFileError, FeatkitError
from featkit.core.fileio import atomic_path, read_json, to_json, write_json, write_text
from featkit.core.schema import BackboneSpec, ClassEntry, CnnState, RunConfig
from featkit.core.tfkeras import tf_keras
from featkit.core.version import __version__
from featkit.runs.calibration import apply_temperature, fit_temperature
from featkit.runs.store import Run, finish

tf_keras()  # TensorFlow's first import, with its start-up noise hidden
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

HISTORY_FIELDS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")
CHECKPOINTS = "checkpoints"


# ------------------------------------------------------------------------------------------------------ helpers


def save_model_atomic(model: keras.Model, path: str | Path) -> None:
    """model.save to a temporary .keras name beside `path`, then rename: never a half-written checkpoint."""
    with atomic_path(path) as tmp:
        model.save(tmp)


def _copy_atomic(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def write_history(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_text(path, buf.getvalue())


def read_history(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return [
            {"epoch": int(r["epoch"]), **{k: float(r[k]) for k in HISTORY_FIELDS[1:] if r.get(k) not in (None, "")}}
            for r in csv.DictReader(fh)
        ]


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Python, NumPy, TF and Keras seeds: enough for repeatable runs on CPU (checked: same losses). With
    `deterministic`, also TF op determinism (for GPUs; process-wide, it cannot be turned off again)."""
    keras.utils.set_random_seed(int(seed))
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the training photos in `epoch` (0-based): derived from (seed, epoch) alone, so a run resumed
    at epoch k sees exactly the batches an uninterrupted run sees."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


def make_dataset(
    x: np.ndarray,
    y: np.ndarray | None,
    n_classes: int,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    epochs: range | None = None,
) -> tf.data.Dataset:
    """Batches of (uint8 photos, one-hot labels) gathered from `x` (an array or a memmap: never copied whole into the
    graph), reshuffled each epoch with a fixed seed, prefetched. With `epochs` (a range of 0-based epochs), the
    batches of those epochs one after another, each epoch in `epoch_order` (fit with steps_per_epoch)."""
    n = len(x)
    shape = (None, *x.shape[1:])
    if epochs is not None:
        ds = tf.data.Dataset.range(epochs.start, epochs.stop).flat_map(
            lambda e: tf.data.Dataset.from_tensor_slices(
                tf.numpy_function(
                    lambda ep: epoch_order(n, seed, int(ep)).astype(np.int64), [e], tf.int64, stateful=False
                )
            ).batch(batch_size)
        )
    else:
        ds = tf.data.Dataset.range(n)
        if shuffle:
            ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size)

    if y is None:

        def gather_x(idx):
            out = tf.numpy_function(lambda i: np.ascontiguousarray(x[np.asarray(i)]), [idx], tf.uint8, stateful=False)
            out.set_shape(shape)
            return out

        ds = ds.map(gather_x, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        y = np.asarray(y, np.int64)

        def gather(idx):
            xb, yb = tf.numpy_function(
                lambda i: (np.ascontiguousarray(x[np.asarray(i)]), y[np.asarray(i)]),
                [idx],
                (tf.uint8, tf.int64),
                stateful=False,
            )
            xb.set_shape(shape)
            yb.set_shape((None,))
            return xb, tf.one_hot(yb, n_classes)

        ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


@contextmanager
def _device_setup(quiet: bool) -> Iterator[tf.distribute.Strategy]:
    """MirroredStrategy + mixed_float16 when GPUs are present; the default strategy and float32 otherwise."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        yield tf.distribute.get_strategy()
        return
    old = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        strategy = tf.distribute.MirroredStrategy()
        if not quiet:
            print(f"train-cnn: {len(gpus)} GPU(s), MirroredStrategy, mixed_float16", file=sys.stderr)
        yield strategy
    finally:
        keras.mixed_precision.set_dtype_policy(old)


class _EpochSeeds(keras.callbacks.Callback):
    """Sets every random layer's seed state (augmentation, dropout) from (seed, epoch) when an epoch begins: Keras
    does not save those states in a checkpoint, so a resumed run would otherwise replay epoch 1's randomness."""

    STEP = 1 << 24  # room for that many random draws per layer per epoch

    def __init__(self, seed: int):
        super().__init__()
        self.seed = int(seed)

    def on_epoch_begin(self, epoch, logs=None):
        states = [v for v in self.model.variables if v.path.endswith("seed_generator_state")]
        for i, v in enumerate(states):
            v.assign(np.asarray([self.seed + 7919 * i, epoch * self.STEP], dtype=v.dtype))


class _CheckpointLog(keras.callbacks.Callback):
    """Per epoch: history.csv row, last.keras, best.keras (by val_loss), then state.json, all atomic; optional
    early stopping (patience) that survives a resume; one progress line."""

    def __init__(self, run: Run, rows: list[dict], state: CnnState, epochs: int, patience: int | None, quiet: bool):
        super().__init__()
        self.run, self.rows, self.state, self.epochs, self.patience, self.quiet = (
            run,
            rows,
            state,
            epochs,
            patience,
            quiet,
        )
        self.ck = run.path / CHECKPOINTS

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        seconds = time.perf_counter() - self._t0
        row = {
            "epoch": epoch + 1,
            "seconds": round(seconds, 3),
            **{k: float(logs[k]) for k in HISTORY_FIELDS[1:5] if k in logs},
        }
        self.rows.append(row)
        save_model_atomic(self.model, self.ck / "last.keras")
        val_loss = float(logs.get("val_loss", np.nan))
        best = self.state.best_val_loss
        improved = best is None or bool(np.isfinite(val_loss) and val_loss < best)
        if improved or not (self.ck / "best.keras").exists():
            save_model_atomic(self.model, self.ck / "best.keras")
        if improved:
            self.state = self.state.replace(
                best_val_loss=val_loss if np.isfinite(val_loss) else None, best_epoch=epoch + 1
            )
        write_history(self.run.path / "history.csv", self.rows)
        stop = self.patience is not None and (epoch + 1) - self.state.best_epoch >= self.patience
        if stop:
            self.model.stop_training = True
        self.state = self.state.replace(epoch=epoch + 1, stopped_early=bool(stop))
        write_json(self.ck / "state.json", self.state.to_dict())  # the commit point of the epoch
        if not self.quiet:
            print(
                f"epoch {epoch + 1}/{self.epochs}  loss {row.get('loss', float('nan')):.4f}  "
                f"acc {row.get('accuracy', float('nan')):.4f}  val_loss {val_loss:.4f}  "
                f"val_acc {row.get('val_accuracy', float('nan')):.4f}  {seconds:.1f}s"
                + ("  *" if improved else "")
                + ("  (early stop)" if stop else ""),
                file=sys.stderr,
                flush=True,
            )


def _check_split(name: str, x: np.ndarray, y: np.ndarray, size: int, n_classes: int) -> None:
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (size, size, 3):
        raise FeatkitError(
            f"{name} photos should be a uint8 array (N, {size}, {size}, 3) for this preset; got "
            f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}: decode at {size} px."
        )
    if len(x) == 0:
        raise FeatkitError(f"the {name} split is empty")
    if len(y) != len(x):
        raise FeatkitError(f"{name}: {len(x)} photos but {len(y)} labels")
    y = np.asarray(y)
    if y.min() < 0 or y.max() >= n_classes:
        raise FeatkitError(f"{name} labels should be class indices 0..{n_classes - 1}; got {y.min()}..{y.max()}")


def _fingerprint(cfg: Preset, n_classes: int, seed: int, extra: dict) -> dict:
    """What must match for a resume; epochs and patience may change (train a finished run for longer)."""
    preset = {k: v for k, v in cfg.training_settings().items() if k not in ("epochs", "patience")}
    return {"preset": preset, "n_classes": n_classes, "seed": seed, "dataset": extra.get("dataset")}


# --------------------------------------------------------------------------------------------------------- train


def train_cnn(
    cfg: Preset,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    classes: Sequence[ClassEntry],
    run_dir: str | Path | Run,
    *,
    seed: int = 0,
    quiet: bool = False,
    resume: bool = True,
    extra_config: dict | None = None,
    test_ids: Sequence[str] | None = None,
    deterministic: bool = False,
) -> Run:
    """Train `cfg` on uint8 arrays (N, size, size, 3) with integer labels (indices into `classes`), checkpointing the
    best epoch by val_loss; then predict the test split with the best model and write the run folder.

    `extra_config` goes into config.json (e.g. {"dataset": fingerprint, "data": {...}}); `test_ids` names the test
    photos in test_predictions.npz (default "0", "1", ...). `deterministic` turns on TF op determinism
    (process-wide; not needed on CPU). Returns the Run.
    """
    extra_config = dict(extra_config or {})
    run = run_dir if isinstance(run_dir, Run) else Run(Path(run_dir))
    run.path.mkdir(parents=True, exist_ok=True)
    n_classes = len(classes)
    for name, x, y in (("training", x_train, y_train), ("validation", x_val, y_val), ("test", x_test, y_test)):
        _check_split(name, x, y, cfg.size, n_classes)
    if test_ids is not None and len(test_ids) != len(x_test):
        raise FeatkitError(f"{len(test_ids)} test ids for {len(x_test)} test photos")

    ck = run.path / CHECKPOINTS
    fingerprint = _fingerprint(cfg, n_classes, seed, extra_config)
    state: CnnState | None = None
    if resume and (ck / "state.json").exists() and (ck / "last.keras").exists():
        state = CnnState.from_dict(
            read_json(ck / "state.json", dict, fix=f"delete {ck} to train this run again from its start"),
            where=str(ck / "state.json"),
        )
        if state.fingerprint != read_json_roundtrip(fingerprint):
            raise FeatkitError(
                f"{run.path} holds checkpoints of a different configuration: use a new run folder, "
                f"or resume=False (--no-resume) to start this one again from scratch."
            )
    else:  # a fresh start: nothing of an earlier attempt may be mistaken for this run's output
        if ck.exists():
            shutil.rmtree(ck)
        for name in ("history.csv", "metrics.json", "model.keras", "test_predictions.npz"):
            (run.path / name).unlink(missing_ok=True)

    set_seed(seed, deterministic)
    run.write_classes(classes)
    stats: dict[str, Any] = {}
    known = {
        k: extra_config.pop(k)
        for k in ("dataset", "fingerprint", "data", "manifest", "resize", "per_class")
        if k in extra_config
    }
    backbone = (
        BackboneSpec(kind="keras", name=cfg.backbone, size=cfg.size, weights=cfg.weights)
        if cfg.model == "transfer" and cfg.backbone is not None  # Preset refuses a transfer model without one
        else None
    )
    config = RunConfig(
        kind="cnn",
        name=cfg.name,
        backbone=backbone,
        size=cfg.size,
        params=cfg.to_dict(),
        n_classes=n_classes,
        seed=seed,
        augment=cfg.augment,
        featkit_version=__version__,
        **known,
        extra=extra_config,
    )
    facts: dict[str, Any] = {
        "n_train": len(x_train),
        "n_val": len(x_val),
        "n_test": len(x_test),
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
    }

    with _device_setup(quiet) as strategy:
        facts["mixed_precision"] = keras.mixed_precision.dtype_policy().name
        facts["replicas"] = strategy.num_replicas_in_sync
        t_prep = time.perf_counter()
        with strategy.scope():
            if state is not None:
                model = load_keras_model(ck / "last.keras", f"delete {ck} to train this run again from its start")
                rows = [r for r in read_history(run.path / "history.csv") if r["epoch"] <= state.epoch]
                prev = run.config.extra if (run.path / "config.json").exists() else {}
                for k in ("standardize_mean", "standardize_std", "zca_info"):
                    if k in prev:
                        stats[k] = prev[k]
                if not quiet:
                    print(f"train-cnn: resuming {run.path} at epoch {state.epoch + 1}/{cfg.epochs}", file=sys.stderr)
            else:
                build_stats: dict[str, Any] = {}
                if cfg.standardize:
                    mean, std = channel_stats(x_train)
                    build_stats.update(mean=mean, std=std)
                    stats.update(standardize_mean=mean.tolist(), standardize_std=std.tolist())
                if cfg.zca:
                    mu, wmat, info = fit_zca(
                        x_train, cfg.zca_samples, cfg.zca_epsilon, seed, build_stats.get("mean"), build_stats.get("std")
                    )
                    build_stats["zca"] = (mu, wmat)
                    stats["zca_info"] = info
                    del wmat
                model = compile_model(build_model(cfg, n_classes, seed=seed, **build_stats), cfg)
                build_stats.clear()
                rows = []
                state = CnnState(fingerprint=read_json_roundtrip(fingerprint))
        facts.update(
            stats,
            prepare_seconds=round(time.perf_counter() - t_prep, 3),
            trainable_params=int(sum(np.prod(w.shape) for w in model.trainable_weights)),
            n_params=int(model.count_params()),
        )
        run.write_config(config.replace(extra={**config.extra, **facts}))

        batch = cfg.batch_size * strategy.num_replicas_in_sync
        start = state.epoch
        train_ds = make_dataset(x_train, y_train, n_classes, batch, seed=seed, epochs=range(start, cfg.epochs))
        val_ds = make_dataset(x_val, y_val, n_classes, batch)
        if start < cfg.epochs and not state.stopped_early:
            cb = _CheckpointLog(run, rows, state, cfg.epochs, cfg.patience, quiet)
            model.fit(
                train_ds,
                validation_data=val_ds,
                epochs=cfg.epochs,
                initial_epoch=start,
                verbose=0,
                shuffle=False,
                steps_per_epoch=-(-len(x_train) // batch),
                callbacks=[_EpochSeeds(seed), cb],
            )
            state = cb.state
        del model

        # the best epoch's model predicts the test split
        _copy_atomic(ck / "best.keras", run.path / "model.keras")
        best = load_keras_model(run.path / "model.keras", f"delete {ck} to train this run again from its start")
        t0 = time.perf_counter()
        raw = best.predict(make_dataset(x_test, None, n_classes, batch), verbose=0).astype(np.float32)
        predict_seconds = time.perf_counter() - t0
        # a temperature fitted on the validation photos calibrates the probabilities the run saves and predicts
        valid_raw = best.predict(make_dataset(x_val, None, n_classes, batch), verbose=0).astype(np.float32)
        temperature = fit_temperature(valid_raw, np.asarray(y_val, np.int64))

    labels = np.asarray(y_test, np.int64)
    probs = apply_temperature(raw, temperature)
    ids = [str(i) for i in range(len(labels))] if test_ids is None else [str(i) for i in test_ids]
    fit_seconds = float(sum(r.get("seconds", 0.0) for r in rows))
    epochs_run = len(rows)
    metrics = finish(
        run,
        probs,
        labels,
        ids,
        extra={  # history.csv is already written, epoch by epoch
            "fit_seconds": round(fit_seconds, 3),
            "epochs_run": epochs_run,
            "seconds_per_epoch": round(fit_seconds / epochs_run, 3) if epochs_run else None,
            "best_epoch": state.best_epoch,
            "best_val_loss": state.best_val_loss,
            "stopped_early": state.stopped_early,
            "predict_seconds": round(predict_seconds, 3),
            "n_test": int(len(labels)),
            "study_top1": cfg.study_top1,
            "study_top5": cfg.study_top5,
        },
        temperature=temperature,
        raw_probs=raw,
    )
    if not quiet:
        print(
            f"train-cnn: test top-1 {100 * metrics.top1:.2f}%  top-5 {100 * metrics.top5:.2f}%  ({epochs_run} epochs, "
            f"{fit_seconds:.1f}s) -> {run.path}",
            file=sys.stderr,
        )
    return run


def load_keras_model(path: Path, fix: str) -> keras.Model:
    """keras.models.load_model, with a truncated or garbage file named in one line (and what to do)."""
    try:
        return keras.models.load_model(path)
    except Exception as e:  # zipfile, h5py, JSON and Keras' own errors, depending on where the file is cut
        raise DamagedFileError(path, f"{path} is damaged ({type(e).__name__}): {fix}.") from None


def read_json_roundtrip(obj: Any) -> Any:
    """`obj` as it reads back from JSON (tuples -> lists, ...), so fingerprints compare equal after a reload."""
    return json.loads(to_json(obj))


# ------------------------------------------------------------------------------------------------------- predict

_MODEL_CACHE: dict[tuple[str, float], keras.Model] = {}


def load_cnn_model(run: Run | str | Path) -> keras.Model:
    """The run's model.keras (its standardisation / ZCA / backbone preprocessing inside), cached per file version."""
    run = run if isinstance(run, Run) else Run(Path(run))
    path = run.path / "model.keras"
    if not path.exists():
        raise FeatkitError(f"{path} is missing: the CNN run did not finish; re-run train-cnn.")
    key = (str(path.resolve()), path.stat().st_mtime)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE.clear()
        _MODEL_CACHE[key] = load_keras_model(path, "re-run train-cnn to make the run again")
    return _MODEL_CACHE[key]


def predict_images(run: Run | str | Path, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Class probabilities (N, C) float32 for uint8 photos (N, size, size, 3) decoded like training (same size and
    resize mode): the saved model applies exactly the preprocessing training applied, then the run's temperature
    (fitted on its validation photos; 1 for runs from before calibration)."""
    run = run if isinstance(run, Run) else Run(Path(run))
    model = load_cnn_model(run)
    temperature = float(run.metrics.temperature or 1.0) if run.complete else 1.0
    size = model.input_shape[1]
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3):
        raise FeatkitError(
            f"this CNN takes uint8 photos (N, {size}, {size}, 3); got {images.dtype} {images.shape}: "
            f"decode them at {size} px."
        )
    if len(images) == 0:
        return np.zeros((0, model.output_shape[-1]), np.float32)
    return apply_temperature(model.predict(images, batch_size=batch_size, verbose=0).astype(np.float32), temperature)
