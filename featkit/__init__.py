"""featkit: cache pretrained-backbone features once, then run classifier experiments in minutes."""

__version__ = "0.1.0"
