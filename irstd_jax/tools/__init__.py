"""Offline tools: run on finished runs, never imported by training, eval or predict.

    python -m irstd_jax.tools.panels ...      paper-style result panels of several runs
    python -m irstd_jax.tools.export ...      a run's model as a jax.export file (and ONNX)
    python -m irstd_jax.tools.pdfa_curves ... Pd-Fa curves of evaluated runs, overlaid
    python -m irstd_jax.tools.summary ...     parameters, FLOPs, learned spatial scalars
    python -m irstd_jax.tools.loss_analysis   the scale losses' gradient monotonicity
    python -m irstd_jax.tools.torch_import    PyTorch MSHNet checkpoints -> an Orbax run

They live inside the package rather than in a top-level tools/ folder so that
`python -m irstd_jax.tools.X` works from any directory wherever irstd_jax is importable,
and so that they use the library as any user code does (public functions of checkpointing,
evaluate, eval_outputs, targets, metrics), while nothing on the training path imports them.
`onnx_export` needs the optional extra requirements-onnx.txt.
"""
