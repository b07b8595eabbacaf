"""Custom CNNs of the classic food-classification study and frozen-backbone transfer models, trained end to end.

Importing this package imports TensorFlow / Keras.
"""

from .models import build_custom_cnn, build_model, build_transfer_model, compile_model, set_fine_tuning
from .presets import PRESETS, Preset, get_preset, list_presets
from .preprocess import channel_stats, fit_zca
from .train import load_cnn_model, predict_images, train_cnn

__all__ = [
    "PRESETS", "Preset", "get_preset", "list_presets", "build_custom_cnn", "build_transfer_model", "build_model",
    "compile_model", "set_fine_tuning", "channel_stats", "fit_zca", "train_cnn", "predict_images", "load_cnn_model",
]
