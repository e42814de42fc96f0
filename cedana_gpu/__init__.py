"""cedana-gpu: transparent checkpoint/restore of GPU processes."""

__version__ = "0.1.0"
