"""Optional extras of featkit (pyproject's [project.optional-dependencies]) and the one way to name them in a
message: `pip install "featkit[ray]"` works from any folder, not only from a checkout as `pip install -e ".[ray]"`."""

from __future__ import annotations


def install_hint(extra: str) -> str:
    """The pip command that adds an optional extra, e.g. 'pip install "featkit[keras]"'."""
    return f'pip install "featkit[{extra}]"'


def help_text(text: str) -> str:
    """`text` for a typer --help string: typer renders help with rich markup, which would eat "[ray]" as a tag."""
    return text.replace("[", "\\[")


__all__ = ["help_text", "install_hint"]
