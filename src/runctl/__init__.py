"""runctl: run ML training jobs wherever you have compute, with one set of verbs."""

__version__ = "0.1.0"
