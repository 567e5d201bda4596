"""The package's version, in a room of its own at the bottom of the house: the records that
carry it (metrics.jsonl's `versions`, the reference's cache key) read it from here, not from
the package's face (`dnnlab/__init__.py`, which loads the API)."""

__version__ = "0.1.0"
