"""Procedurally generated infrared scenes: the built-in default dataset.

Each scene is a cluttered infrared background (1/f "cloud" texture, a horizon band, bright
extended structures, sensor noise) with 0-3 small targets whose intensity profile is an
elliptical Gaussian. The label of a target is exactly the set of pixels where its own
profile reaches half its peak (always including the peak pixel), so the mask is known
without any thresholding of the noisy image; target areas span 1-81 px.

Scenes are a pure function of (seed, split, index): the same index always gives the same
image, in any process, in any order. That is what lets the grain pipeline shard and
resume without storing anything.

The clutter is chosen to make the task non-trivial: bright structures larger than any
target (buildings, glints on cloud edges) and point-like noise spikes below target SNR
must be rejected, which is exactly the size/contrast cue a real IRSTD model has to learn.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

_SPLIT_IDS = {'train': 0, 'validation': 1, 'test': 2}
# Area of the half-maximum ellipse of a Gaussian with axis sigmas (sx, sy):
# pi * (sqrt(2 ln 2) sx) * (sqrt(2 ln 2) sy) = 2 pi ln2 sx sy.
_HALF_MAX_AREA = 2.0 * math.pi * math.log(2.0)


@dataclasses.dataclass(frozen=True)
class SceneConfig:
  """Knobs of the generator; defaults give a learnable but cluttered task."""
  image_size: int = 256
  max_targets: int = 3
  min_area: float = 1.0
  max_area: float = 81.0
  snr_range: tuple[float, float] = (10.0, 30.0)
  noise_sigma: float = 4.0  # grey levels
  num_structures: tuple[int, int] = (0, 4)  # bright extended clutter per scene
  # Axis sigmas (px) of that clutter: the smallest has a half-max area of
  # 2 pi ln2 * 10 * 3 = 131 px (> max_area); long / short is 1.4 to 8.
  structure_long_sigma: tuple[float, float] = (10.0, 24.0)
  structure_short_sigma: tuple[float, float] = (3.0, 7.0)
  structure_amplitude: tuple[float, float] = (20.0, 70.0)  # grey levels

  def __post_init__(self):
    smallest = _HALF_MAX_AREA * self.structure_long_sigma[0] * self.structure_short_sigma[0]
    if smallest <= self.max_area:
      # Clutter the size of a target would make the labels contradict the image.
      raise ValueError(
          f'the smallest clutter structure (half-max area {smallest:.0f} px) must be larger '
          f'than the largest target ({self.max_area:.0f} px): raise structure_long_sigma or '
          'structure_short_sigma')


def _cloud_texture(rng: np.random.Generator, size: int) -> np.ndarray:
  """Zero-mean, unit-std 1/f^beta noise: smooth clouds with fractal detail."""
  beta = rng.uniform(2.6, 3.6)
  fy = np.fft.fftfreq(size)[:, None]
  fx = np.fft.rfftfreq(size)[None, :]
  radius = np.sqrt(fx**2 + fy**2)
  radius[0, 0] = 1.0
  amplitude = radius ** (-beta / 2.0)
  amplitude[0, 0] = 0.0
  phase = rng.uniform(0.0, 2.0 * np.pi, amplitude.shape)
  field = np.fft.irfft2(amplitude * np.exp(1j * phase), s=(size, size))
  return (field - field.mean()) / (field.std() + 1e-12)


def _background(rng: np.random.Generator, cfg: SceneConfig) -> np.ndarray:
  size = cfg.image_size
  base = rng.uniform(40.0, 150.0)
  clouds = rng.uniform(6.0, 22.0) * _cloud_texture(rng, size)
  image = base + clouds
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
  if rng.random() < 0.5:  # a horizon: warmer ground below a soft, tilted edge
    row = rng.uniform(0.3, 0.9) * size
    slope = rng.uniform(-0.3, 0.3)
    distance = (yy - row - slope * (xx - size / 2)) / rng.uniform(1.0, 6.0)
    edge = 0.5 * (1.0 + np.tanh(0.5 * distance))  # a logistic step that cannot overflow
    image += rng.uniform(-20.0, 40.0) * edge
  lo, hi = cfg.num_structures
  for _ in range(rng.integers(lo, hi + 1)):
    # Extended bright clutter (rooftops, glints on cloud edges): as bright as targets but
    # elongated and larger than any of them (half-max area > max_area), so size and shape,
    # not brightness, tell them apart.
    cy, cx = rng.uniform(0, size, 2)
    sy, sx = rng.uniform(*cfg.structure_long_sigma), rng.uniform(*cfg.structure_short_sigma)
    angle = rng.uniform(0, np.pi)
    u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
    v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
    image += rng.uniform(*cfg.structure_amplitude) * np.exp(-0.5 * ((u / sy) ** 2 + (v / sx) ** 2))
  return image


def _place_targets(rng: np.random.Generator, cfg: SceneConfig, image: np.ndarray):
  """Adds 0..max_targets Gaussian targets in place; returns the binary mask."""
  size = cfg.image_size
  mask = np.zeros((size, size), np.uint8)
  num = rng.integers(0, cfg.max_targets + 1)
  centres: list[tuple[float, float]] = []
  margin = 6
  for _ in range(num):
    for _attempt in range(20):
      cy, cx = rng.uniform(margin, size - margin, 2)
      if all((cy - py) ** 2 + (cx - px) ** 2 > 30.0**2 for py, px in centres):
        break
    else:
      continue
    centres.append((cy, cx))
    area = math.exp(rng.uniform(math.log(cfg.min_area), math.log(cfg.max_area)))
    aspect = rng.uniform(1.0, 1.8)
    sigma_prod = area / _HALF_MAX_AREA
    sy = math.sqrt(sigma_prod * aspect)
    sx = sigma_prod / sy
    angle = rng.uniform(0.0, np.pi)
    half = int(math.ceil(3.5 * max(sy, sx))) + 1
    y0, y1 = max(int(cy) - half, 0), min(int(cy) + half + 1, size)
    x0, x1 = max(int(cx) - half, 0), min(int(cx) + half + 1, size)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    u = (xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)
    v = -(xx - cx) * math.sin(angle) + (yy - cy) * math.cos(angle)
    profile = np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))
    peak = profile.max()
    snr = rng.uniform(*cfg.snr_range)
    image[y0:y1, x0:x1] += snr * cfg.noise_sigma * profile / peak
    region = profile >= 0.5 * peak
    region[np.unravel_index(np.argmax(profile), profile.shape)] = True
    mask[y0:y1, x0:x1] |= region.astype(np.uint8)
  return mask


def make_scene(seed: int, split: str, index: int, cfg: SceneConfig = SceneConfig()):
  """Generates one scene.

  Args:
    seed: dataset seed.
    split: 'train', 'validation' or 'test' (disjoint random streams).
    index: image index within the split.
    cfg: generator settings.

  Returns:
    (image uint8 [S, S], mask uint8 [S, S] in {0, 1}).
  """
  rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
  image = _background(rng, cfg)
  mask = _place_targets(rng, cfg, image)
  image += rng.normal(0.0, cfg.noise_sigma, image.shape)
  # Isolated hot pixels: point-like, but below the weakest target's contrast.
  num_spikes = rng.integers(0, 6)
  ys, xs = rng.integers(0, cfg.image_size, (2, num_spikes))
  image[ys, xs] += rng.uniform(1.0, 2.5, num_spikes) * cfg.noise_sigma
  return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask


class SyntheticSource:
  """A grain-compatible random-access source of synthetic scenes.

  Records match the TFDS builders' features: 'image' uint8 [S, S, 1], 'mask' uint8
  [S, S, 1] in {0, 1} and 'id' (str).
  """

  def __init__(self, split: str, num_images: int, *, seed: int = 0,
               cfg: SceneConfig = SceneConfig()):
    if split not in _SPLIT_IDS:
      raise ValueError(f'unknown split {split!r}; expected one of {sorted(_SPLIT_IDS)}')
    self.split = split
    self.num_images = num_images
    self.seed = seed
    self.cfg = cfg

  def __len__(self) -> int:
    return self.num_images

  def __getitem__(self, index: int) -> dict:
    if not 0 <= index < self.num_images:
      raise IndexError(index)
    image, mask = make_scene(self.seed, self.split, int(index), self.cfg)
    return {'image': image[..., None], 'mask': mask[..., None],
            'id': f'synthetic_{self.split}_{index:05d}'}

  def __repr__(self) -> str:
    return (f'SyntheticSource(split={self.split!r}, num_images={self.num_images}, '
            f'seed={self.seed}, image_size={self.cfg.image_size})')


def load_from_config(data_config, split: str, *, seed: int = 0) -> SyntheticSource:
  """The source of one split from a config's `data` block (the dataset registry's loader
  for 'synthetic'): sizes from data.synthetic.num_{train,val,test}."""
  syn = data_config.synthetic
  sizes = {'train': syn.num_train, 'validation': syn.num_val, 'test': syn.num_test}
  return SyntheticSource(split, sizes[split], seed=seed,
                         cfg=SceneConfig(image_size=syn.image_size))
