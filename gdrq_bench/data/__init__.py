"""Data sets: one module per on-disk format, plus the embedded data written in those formats."""
