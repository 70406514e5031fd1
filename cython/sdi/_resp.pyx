# cython: language_level=3
"""RESP2/RESP3 codec (placeholder while the codec is written)."""

def version():
    return 1
