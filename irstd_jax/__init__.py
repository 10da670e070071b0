"""irstd_jax: infrared small target detection in JAX / Flax NNX."""
