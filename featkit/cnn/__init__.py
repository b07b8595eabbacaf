"""Custom CNNs of the classic food-classification study and frozen-backbone transfer models, trained end to end.

The presets (`featkit.cnn.presets`) import nothing heavy; models, preprocessing and training import
TensorFlow / Keras when first used, so `featkit train-cnn --list` starts at once.
"""

from importlib import import_module

from featkit.cnn.presets import PRESETS, STUDY_ORDER, Preset, get_preset, list_presets

_LAZY = {
    "build_custom_cnn": "models",
    "build_model": "models",
    "build_transfer_model": "models",
    "compile_model": "models",
    "set_fine_tuning": "models",
    "channel_stats": "preprocess",
    "fit_zca": "preprocess",
    "load_cnn_model": "train",
    "predict_images": "train",
    "train_cnn": "train",
    "run_series": "series",
    "train_preset": "series",
    "study_comparison": "study",
    "study_section": "study",
}

__all__ = ["PRESETS", "STUDY_ORDER", "Preset", "get_preset", "list_presets", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
