"""Backbone names that say what they are: an ONNX model by the name `featkit backbones` lists, a Keras model by its
registry name, and a default backbone for a folder of work.

    locate("mobilenet-v2")     # '../shared/models/mobilenet-v2.onnx' when that file is in the models folder
    locate("mobilenetv2")      # 'mobilenetv2': Keras' MobileNetV2 (ImageNet weights downloaded by Keras)
    locate("keras:mobilenet-v2"), locate("onnx:mobilenet-v2")   # say which, where a name could be both
    default_backbone()         # ('mobilenet-v2', 'featkit.toml') or (None, '')

The models folder: $FEATKIT_MODELS, else `models = "..."` in ./featkit.toml, else ./shared/models or
../shared/models when present (the shared folder beside a checkout). A name that is both an ONNX file there and a
Keras registry name is refused, listing both. The default backbone: $FEATKIT_BACKBONE, else `backbone = "..."` in
./featkit.toml (a name or an .onnx path, relative paths from the working directory), e.g.

    # featkit.toml
    backbone = "mobilenet-v2"
    models = "../shared/models"
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from featkit.backbones.keras_zoo import MODELS as KERAS_MODELS
from featkit.backbones.keras_zoo import is_keras_name
from featkit.core.errors import FeatkitError

MODELS_ENV = "FEATKIT_MODELS"
BACKBONE_ENV = "FEATKIT_BACKBONE"
WORKSPACE_FILE = "featkit.toml"
WORKSPACE_KEYS = ("backbone", "models")
SHARED_MODELS = (Path("shared/models"), Path("../shared/models"))


def workspace_settings(folder: str | Path = ".") -> dict[str, Any]:
    """The settings of ./featkit.toml ({} when there is none); a file featkit cannot read fails in one line."""
    import tomllib

    path = Path(folder) / WORKSPACE_FILE
    if not path.is_file():
        return {}
    try:
        with open(path, "rb") as fh:
            settings = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise FeatkitError(f"{path} is not readable TOML ({e}): fix it or delete it.") from None
    unknown = [k for k in settings if k not in WORKSPACE_KEYS]
    if unknown:
        raise FeatkitError(f"{path}: unknown setting {unknown[0]!r}; featkit.toml takes {', '.join(WORKSPACE_KEYS)}.")
    bad = [k for k, v in settings.items() if not isinstance(v, str) or not v.strip()]
    if bad:
        raise FeatkitError(f'{path}: {bad[0]} should be a non-empty string, e.g. {bad[0]} = "mobilenet-v2".')
    return settings


def models_dir() -> Path | None:
    """The folder whose .onnx files are backbones by name (see the module docstring), or None."""
    for value, where in (
        (os.environ.get(MODELS_ENV), f"${MODELS_ENV}"),
        (workspace_settings().get("models"), f"models in {WORKSPACE_FILE}"),
    ):
        if value:
            path = Path(value).expanduser()
            if not path.is_dir():
                raise FeatkitError(f"{where} = {value!r} is not a folder: give the folder of the .onnx models.")
            return path
    return next((p for p in SHARED_MODELS if p.is_dir()), None)


def default_backbone() -> tuple[str | None, str]:
    """(the folder's default backbone, where it was set) from $FEATKIT_BACKBONE or ./featkit.toml; (None, '')."""
    env = os.environ.get(BACKBONE_ENV, "").strip()
    if env:
        return env, f"${BACKBONE_ENV}"
    value = workspace_settings().get("backbone")
    return (value, WORKSPACE_FILE) if value else (None, "")


def onnx_models(folder: Path | None) -> dict[str, Path]:
    """{name: path} of the .onnx files in `folder` (the name is the file name without .onnx)."""
    if folder is None or not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.glob("*.onnx"))}


def locate(name_or_path: str, models: Path | None = None) -> str:
    """What get_backbone takes for a --backbone value: a path as given; `onnx:NAME` the model NAME.onnx of the
    models folder; `keras:NAME` the Keras model; a NAME that is an .onnx file of the models folder its path (never
    Keras' model of a similar name); other names as given (Keras names). A NAME that is both an .onnx file there
    and a Keras registry name is refused, listing both."""
    s = str(name_or_path)
    if s.startswith("keras:"):
        return s  # kept: Keras' registry reads it (keras_zoo.lookup), and locating it again changes nothing
    forced = s.startswith("onnx:")
    name = s.removeprefix("onnx:")
    if not forced and (os.sep in name or "/" in name or name.lower().endswith((".onnx", ".h5")) or Path(name).exists()):
        return name
    folder = models if models is not None else models_dir()
    found = onnx_models(folder)
    if forced:
        if name not in found:
            where = f"in {folder}" if folder else f"(no models folder: set ${MODELS_ENV} or give the .onnx path)"
            listed = f" ({', '.join(found)})" if found else ""
            raise FeatkitError(f"--backbone {s}: no {name}.onnx {where}{listed}.")
        return str(found[name])
    if name in found:
        if name.lower() in KERAS_MODELS:
            raise FeatkitError(
                f"--backbone {name} is ambiguous: the ONNX model {found[name]} or the Keras model "
                f"{KERAS_MODELS[name.lower()].name}; give --backbone onnx:{name} or --backbone keras:{name}."
            )
        return str(found[name])
    return name


def keras_name(name: str) -> str:
    """The Keras registry name a transfer CNN trains (`train-cnn --backbone`): `keras:NAME` or a Keras name; an
    ONNX model (a path, onnx:NAME, or a name of the models folder that is not a Keras name) is refused in one line,
    never swapped for Keras' model of a similar name."""
    from featkit.backbones.keras_zoo import lookup

    s = str(name)
    if not s.startswith("keras:"):
        folder_name = s.removeprefix("onnx:")
        onnx = s.startswith("onnx:") or s.lower().endswith(".onnx")
        if not onnx and s.lower() not in KERAS_MODELS:
            try:
                onnx = folder_name in onnx_models(models_dir())
            except FeatkitError:
                onnx = False
        if onnx:
            raise FeatkitError(
                f"--backbone {s} is an ONNX model: a transfer CNN trains a Keras backbone; give a Keras name from "
                "`featkit backbones` (e.g. mobilenetv2), or fit a head on the ONNX model's features (fit-head)."
            )
    return lookup(s).name


def describe(name_or_path: str) -> str:
    """'mobilenet-v2 (ONNX ../shared/models/mobilenet-v2.onnx)' or 'mobilenetv2 (Keras)': what a name stands for."""
    target = locate(name_or_path)
    if target.lower().endswith(".onnx"):
        return f"{Path(target).stem} (ONNX {target})"
    return f"{target} (Keras)" if is_keras_name(target) else target


__all__ = [
    "locate",
    "models_dir",
    "default_backbone",
    "workspace_settings",
    "onnx_models",
    "describe",
    "keras_name",
    "MODELS_ENV",
    "BACKBONE_ENV",
    "WORKSPACE_FILE",
]
