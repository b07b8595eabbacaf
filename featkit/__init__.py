"""featkit: cache pretrained-backbone features once, then run classifier experiments in minutes."""

from featkit.core.version import __version__

__all__ = ["__version__"]
