"""Checks a raw IRSTD folder before it is built, and prints a report.

    python -m irstd_jax.validate_dataset RAW_DIR [--dataset nudt_sirst] [--layout dnanet]

Reports the layout found, per-split totals (images, targets, target pixels, sizes), and every
problem: missing or unpaired files, masks whose size differs from their image, non-binary
masks (with the count of stray pixels), empty masks, images duplicated across splits (by
decoded pixels), training images that nearly equal a test image (consecutive video frames, a
reused background: irstd_jax.leakage), unreadable files. Exit status 0 when the TFDS builders
would accept the folder (warnings only), 1 when they would refuse it, 2 on bad arguments. The
builders run the same checks (irstd_jax.dataset_splits) and refuse bad data with the same
messages.
"""
from __future__ import annotations

import argparse
import sys

from irstd_jax import dataset_registry
from irstd_jax import dataset_splits
from irstd_jax import raw_layout
from irstd_jax.raw_issues import RawDataError

GENERIC = 'irstd_folder'  # what a folder is checked as when no --dataset is given


def validate(raw_dir: str, *, dataset: str | None = None, decode: bool = True,
             **options) -> dataset_splits.Plan:
  """Finds the layout(s) of `raw_dir`, scans them and splits them as the builder would.

  Args:
    raw_dir: the manual directory.
    dataset: a registry name (its folder names, named splits, official counts); None checks
      the folder as a user's own data.
    decode: False checks only names and pairing (no file is opened).
    **options: dataset_splits.Options fields (split_lists, layout, images, masks, train_list, ...).

  Raises:
    RawDataError: no layout could be found.
  """
  return dataset_splits.plan(raw_dir, dataset or GENERIC, dataset_splits.Options(**options),
                             decode=decode)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m irstd_jax.validate_dataset',
                                   description=__doc__.split('\n\n')[0])
  parser.add_argument('raw_dir', help='the raw dataset folder (the manual directory)')
  parser.add_argument('--dataset', choices=dataset_registry.builder_names(),
                      help='check against this dataset (its folder names, official counts)')
  parser.add_argument('--split-lists', default='', help='a named split of the dataset (e.g. acm)')
  parser.add_argument('--subset', default='', help='basicirstd: the <Name> to check')
  parser.add_argument('--layout', choices=raw_layout.LAYOUTS, help='force a layout (default: '
                      'detect)')
  parser.add_argument('--images', help='image folder, relative to RAW_DIR')
  parser.add_argument('--masks', help='mask folder, relative to RAW_DIR')
  parser.add_argument('--train-list', help='official train split list, relative to RAW_DIR')
  parser.add_argument('--test-list', help='official test split list, relative to RAW_DIR')
  parser.add_argument('--val-fraction', type=float,
                      default=dataset_registry.DEFAULT_VAL_FRACTION,
                      help='share of train the builders hold out as validation (reported)')
  parser.add_argument('--drop-size-mismatch', action='store_true',
                      help='report what the builder would drop instead of refusing')
  parser.add_argument('--deduplicate', default='none', choices=dataset_splits.DEDUPLICATE,
                      help='report the splits the builder would keep with this option')
  parser.add_argument('--quick', action='store_true',
                      help='check names and pairing only; open no image (cannot tell '
                      'whether the builders accept the files)')
  parser.add_argument('--mask-threshold', type=int, default=None,
                      help='mask pixels > this are target (default 127; without it, a mask '
                      'whose non-zero pixels are all <= 127 is an error)')
  parser.add_argument('--max-per-code', type=int, default=20,
                      help='problems printed per kind (all are counted)')
  args = parser.parse_args(argv)
  try:
    plan = validate(args.raw_dir, dataset=args.dataset, decode=not args.quick,
                    split_lists=args.split_lists, subset=args.subset, layout=args.layout,
                    images=args.images, masks=args.masks, train_list=args.train_list,
                    test_list=args.test_list, val_fraction=args.val_fraction,
                    drop_size_mismatch=args.drop_size_mismatch, deduplicate=args.deduplicate,
                    mask_threshold=args.mask_threshold)
  except RawDataError as e:
    print(e)
    if args.dataset:
      print(dataset_registry.manual_instructions(args.dataset, args.raw_dir))
    return 1
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(plan.format(max_per_code=args.max_per_code))
  if not plan.errors:
    sizes = plan.sizes()
    print(f'Built splits: train {sizes["train"]}, validation {sizes["validation"]} '
          f'({plan.notes[-1].partition(": ")[2]}), test {sizes["test"]}.')
  return 1 if plan.errors else 0


if __name__ == '__main__':
  sys.exit(main())
