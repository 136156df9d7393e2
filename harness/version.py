"""The harness's version (one definition; ``harness.__version__`` and every result's ``env`` read it)."""

__version__ = "0.1.0"
