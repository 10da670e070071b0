"""Offline tools: run on finished runs, never imported by training, eval or predict.

    python -m irstd_jax.tools.panels ...      paper-style result panels of several runs
    python -m irstd_jax.tools.export ...      a run's model as a jax.export file (and ONNX)

They live inside the package rather than in a top-level tools/ folder so that
`python -m irstd_jax.tools.X` works from any directory wherever irstd_jax is importable,
and so that they use the library as any user code does (public functions of evaluate,
predict, metrics), while nothing on the training path imports them.
`onnx_export` needs the optional extra requirements-onnx.txt.
"""
