"""Benchmarks and the PyTorch reference MSHNet (parity and speed only; needs torch).

`torch` is an optional extra (requirements-bench.txt), never a dependency of irstd_jax.
"""
