"""gdrq_bench: an experiment runner for GDRQ low-bit quantization."""

__version__ = "0.1.0"
