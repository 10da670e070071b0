"""Offline tools: run on finished runs, never imported by training, eval or predict.

    python -m irstd_jax.tools.panels ...      paper-style result panels of several runs
    python -m irstd_jax.tools.export ...      a run's model as a jax.export file or ONNX
"""
