"""Benchmarks jfe generates itself, offline, rather than reads: each writes a dataset in a layout the
readers in :mod:`jfe.data` already understand."""
