"""The one version number of every lrlc package (pyproject.toml reads it from here)."""

__version__ = "0.2.0"
