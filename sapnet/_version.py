"""The package version, in one place: ``sapnet.__version__`` and the download User-Agent read it from here, and
``pyproject.toml`` states the same number (a test checks that they agree)."""

__version__ = "0.1.0"
