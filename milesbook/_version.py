"""The package version: one number, also in pyproject.toml and CITATION.cff (a test checks)."""
__version__ = "0.2.0"
