"""Reference models and hypothesis helpers that tests and benchmarks share.

The models here are deliberately simple and slow: they are the oracles the
compiled cores are checked against, and the baselines a Python user would
otherwise write.
"""
