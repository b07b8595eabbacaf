"""Custom CNNs (the study's conv + max-pool blocks) and frozen-backbone transfer models.

Every model takes uint8 photos (N, size, size, 3) and does its own preprocessing inside, so the saved .keras file
is all `predict` needs: Rescaling(1/255) or the training split's standardisation / ZCA for custom CNNs, the
backbone family's `preprocess_input` for transfer models. Augmentation layers are active only in training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from featkit.cnn.preprocess import BackbonePreprocess, Standardize, ZCAWhitening
from featkit.cnn.presets import Preset
from featkit.core.errors import FeatkitError
from featkit.core.tfkeras import tf_keras

tf_keras()  # TensorFlow's first import, with its start-up noise hidden
import keras  # noqa: E402


def _base_model(name: str, size: int, weights: str | Path | None) -> tuple[keras.Model, str]:
    """A headless backbone (no pooling) for `size` px from the registry (featkit.backbones.keras_zoo), and the
    keras.applications module whose preprocess_input goes with it (stored by name in the saved model)."""
    from featkit.backbones.keras_zoo import keras_base, lookup

    base, _preprocess = keras_base(name, size, None if weights is None else str(weights), pooling=None)
    return base, lookup(name).module


def _augmentation(cfg: Preset, seed: int) -> list[keras.layers.Layer]:
    """ImageDataGenerator-like random rotation, shifts and flips (fill_mode 'nearest'); active only in training."""
    layers: list[keras.layers.Layer] = []
    if not cfg.augment:
        return layers
    if cfg.rotation:
        layers.append(
            keras.layers.RandomRotation(
                cfg.rotation / 360.0, fill_mode="nearest", seed=seed, dtype="float32", name="aug_rotation"
            )
        )
    if cfg.shift:
        layers.append(
            keras.layers.RandomTranslation(
                cfg.shift, cfg.shift, fill_mode="nearest", seed=seed + 1, dtype="float32", name="aug_shift"
            )
        )
    mode = (
        "horizontal_and_vertical"
        if cfg.hflip and cfg.vflip
        else "horizontal"
        if cfg.hflip
        else "vertical"
        if cfg.vflip
        else None
    )
    if mode:
        layers.append(keras.layers.RandomFlip(mode, seed=seed + 2, dtype="float32", name="aug_flip"))
    return layers


def _head(x, n_classes: int):
    # float32 softmax even under a mixed_float16 policy
    return keras.layers.Dense(n_classes, activation="softmax", dtype="float32", name="predictions")(x)


def build_custom_cnn(
    cfg: Preset,
    n_classes: int,
    *,
    mean: np.ndarray | None = None,
    std: np.ndarray | None = None,
    zca: tuple[np.ndarray, np.ndarray] | None = None,
    seed: int = 0,
) -> keras.Model:
    """The study's CNN: [augment] -> rescale 1/255 | standardise -> [ZCA] -> N x (Conv2D(k, same, relu) -> [Dropout]
    -> MaxPool 2) -> GlobalAveragePooling -> Dense softmax. `mean`/`std` are needed when cfg.standardize,
    `zca` = (pixel mean, W) when cfg.zca."""
    if cfg.model != "custom":
        raise FeatkitError(f"preset {cfg.name} is a {cfg.model} model, not a custom CNN")
    if cfg.standardize and (mean is None or std is None):
        raise ValueError("cfg.standardize needs the training split's per-channel mean and std")
    if cfg.zca and zca is None:
        raise ValueError("cfg.zca needs a fitted whitening (fit_zca)")
    inputs = keras.Input((cfg.size, cfg.size, 3), dtype="uint8", name="image")
    scale = 1.0 if (cfg.standardize or cfg.zca) else 1.0 / 255.0
    x = keras.layers.Rescaling(scale, dtype="float32", name="to_float")(inputs)
    for layer in _augmentation(cfg, seed):
        x = layer(x)
    if cfg.standardize:
        x = Standardize(mean, std, name="standardize")(x)
    zca_layer = None
    if cfg.zca:
        zca_layer = ZCAWhitening(name="zca")
        x = zca_layer(x)
    for i, f in enumerate(cfg.filters, 1):
        x = keras.layers.Conv2D(f, cfg.kernel, padding="same", activation="relu", name=f"conv{i}")(x)
        if cfg.dropout:  # where the study put it: after the convolution, before its pooling
            x = keras.layers.Dropout(cfg.dropout, seed=seed + 10 + i, name=f"drop{i}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, _head(x, n_classes), name=f"cnn_{cfg.name}")
    if zca_layer is not None and zca is not None:
        zca_layer.set_whitening(*zca)
    return model


def backbone_layer(model: keras.Model) -> keras.Model:
    """The backbone sub-model inside a transfer model."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            return layer
    raise FeatkitError(f"model {model.name} has no backbone")


def _layer_index(base: keras.Model, ref: str | int) -> int:
    if isinstance(ref, int) or (isinstance(ref, str) and ref.lstrip("-").isdigit()):
        i = int(ref)
        if not -len(base.layers) <= i < len(base.layers):
            raise FeatkitError(f"fine_tune_from={ref}: {base.name} has {len(base.layers)} layers")
        return i % len(base.layers)
    names = [layer.name for layer in base.layers]
    if ref not in names:
        raise FeatkitError(f"fine_tune_from={ref!r}: no such layer in {base.name} (e.g. {', '.join(names[-8:])})")
    return names.index(ref)


def set_fine_tuning(base: keras.Model, fine_tune_from: str | int | None) -> None:
    """Freeze the backbone; with `fine_tune_from`, unfreeze its layers from that one (name or index) on,
    except BatchNormalization layers, which stay frozen (and so in inference mode)."""
    if fine_tune_from is None:
        base.trainable = False
        return
    start = _layer_index(base, fine_tune_from)
    base.trainable = True
    for i, layer in enumerate(base.layers):
        layer.trainable = i >= start and not isinstance(layer, keras.layers.BatchNormalization)


def build_transfer_model(
    backbone: str = "vgg16",
    size: int = 128,
    n_classes: int = 2,
    weights: str | Path | None = "imagenet",
    fine_tune_from: str | int | None = None,
    *,
    dense: int = 1024,
    dropout: float = 0.0,
    augment: Preset | None = None,
    seed: int = 0,
) -> keras.Model:
    """uint8 photos -> [augment] -> preprocess_input of the family -> backbone (frozen, inference mode)
    -> GlobalAveragePooling -> Dense(dense, relu) -> [Dropout] -> Dense softmax."""
    base, module = _base_model(backbone, size, weights)
    if weights is None or str(weights).lower() == "none":
        keras.utils.set_random_seed(seed)  # the registry seeds random backbones with 0; the head follows `seed`
    set_fine_tuning(base, fine_tune_from)
    inputs = keras.Input((size, size, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1.0, dtype="float32", name="to_float")(inputs)
    for layer in _augmentation(augment, seed) if augment is not None else []:
        x = layer(x)
    x = BackbonePreprocess(module, name="backbone_preprocess")(x)
    # training=False is recorded, but a Keras 3 functional model passes its own `training` down to every layer
    # at call time; what keeps BatchNormalization in inference mode is that it is frozen (set_fine_tuning).
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(dense, activation="relu", name="dense")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, seed=seed + 10, name="head_dropout")(x)
    return keras.Model(inputs, _head(x, n_classes), name=f"transfer_{backbone.lower()}_{size}")


def build_model(cfg: Preset, n_classes: int, *, seed: int = 0, **stats: Any) -> keras.Model:
    if cfg.model == "transfer":
        assert cfg.backbone is not None  # Preset refuses a transfer model without one
        if cfg.standardize or cfg.zca:
            raise FeatkitError(
                f"preset {cfg.name}: standardisation / ZCA do not apply to a pretrained backbone "
                f"(it has its own preprocessing)"
            )
        return build_transfer_model(
            cfg.backbone,
            cfg.size,
            n_classes,
            cfg.weights,
            cfg.fine_tune_from,
            dense=cfg.dense,
            dropout=cfg.dropout,
            augment=cfg if cfg.augment else None,
            seed=seed,
        )
    return build_custom_cnn(cfg, n_classes, seed=seed, **stats)


def learning_rate(cfg: Preset) -> float:
    """The preset's learning rate; a tenth of it when fine-tuning backbone layers."""
    return cfg.lr / 10.0 if (cfg.model == "transfer" and cfg.fine_tune_from is not None) else cfg.lr


def compile_model(model: keras.Model, cfg: Preset) -> keras.Model:
    lr = learning_rate(cfg)
    opt = keras.optimizers.RMSprop(lr) if cfg.optimizer == "rmsprop" else keras.optimizers.Adam(lr)
    model.compile(optimizer=opt, loss="categorical_crossentropy", metrics=["accuracy"])
    return model
