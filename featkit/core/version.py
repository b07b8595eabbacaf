"""featkit's version, read once from the installed package's metadata (pyproject.toml is the one place it is
written)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("featkit")
except PackageNotFoundError:  # a source tree imported without being installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
