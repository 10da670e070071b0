"""glibc malloc tuning for XLA:CPU; imports nothing heavy, so it can run before jax.

XLA:CPU allocates a step's temporaries (about 1.1 GB for MSHNet at 256x256, batch 4) and
its conv libraries' scratch buffers (up to 150 MB) with malloc from worker-thread arenas.
glibc serves blocks that large with fresh mmaps and unmaps them on free, so every step
page-faults them back in (300k faults and 0.5 s of system time per 2 s step measured on a
2-core CPU; benchmarks/README.md). Keeping freed memory in one arena makes it reusable.
"""
import ctypes
import sys

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


def keep_freed_memory() -> bool:
  """Makes glibc keep freed memory for reuse instead of returning it to the OS.

  One arena, no mmap for large blocks, no trimming. Must run before the first thread
  allocates (before importing jax or torch): arenas made earlier keep their settings.
  The price is resident memory that stays at the run's peak. Linux/glibc only; elsewhere
  a no-op that returns False.

  Returns:
    True if every setting was applied.
  """
  if not sys.platform.startswith('linux'):
    return False
  try:
    libc = ctypes.CDLL('libc.so.6')
    return bool(libc.mallopt(_M_ARENA_MAX, 1) and libc.mallopt(_M_MMAP_MAX, 0)
                and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
  except (OSError, AttributeError):  # musl, or no libc.so.6
    return False
