"""Checks a raw IRSTD folder before it is built, and prints a report.

    python -m irstd_jax.validate_dataset RAW_DIR [--dataset nudt_sirst] [--layout dnanet]

Reports the layout found, per-split totals (images, targets, target pixels, sizes), and every
problem: missing or unpaired files, masks whose size differs from their image, non-binary
masks (with the count of stray pixels), empty masks, images duplicated across splits (by
decoded pixels), unreadable files. Exit status 0 when the TFDS builders would accept the
folder (warnings only), 1 when they would refuse it, 2 on bad arguments. The builders run the
same checks (irstd_jax.raw_data) and refuse bad data with the same messages.
"""
from __future__ import annotations

import argparse
import sys

from irstd_jax import raw_data


def validate(raw_dir: str, *, dataset: str | None = None, layout: str | None = None,
             images: str | None = None, masks: str | None = None,
             train_list: str | None = None, test_list: str | None = None,
             decode: bool = True, mask_threshold: int | None = None) -> raw_data.Report:
  """Finds the layout of `raw_dir` and scans it (see raw_data.find_layout and scan).

  Raises:
    raw_data.RawDataError: no layout could be found.
  """
  found = raw_data.find_layout(raw_dir, layout=layout, dataset=dataset, images=images,
                               masks=masks, train_list=train_list, test_list=test_list)
  return raw_data.scan(found, decode=decode, dataset=dataset, mask_threshold=mask_threshold)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m irstd_jax.validate_dataset',
                                   description=__doc__.split('\n\n')[0])
  parser.add_argument('raw_dir', help='the raw dataset folder (the manual directory)')
  parser.add_argument('--dataset', choices=sorted(raw_data.DATASETS),
                      help='check against this dataset (its folder names, official counts)')
  parser.add_argument('--layout', choices=raw_data.LAYOUTS, help='force a layout (default: '
                      'detect)')
  parser.add_argument('--images', help='image folder, relative to RAW_DIR')
  parser.add_argument('--masks', help='mask folder, relative to RAW_DIR')
  parser.add_argument('--train-list', help='official train split list, relative to RAW_DIR')
  parser.add_argument('--test-list', help='official test split list, relative to RAW_DIR')
  parser.add_argument('--val-fraction', type=float, default=0.1,
                      help='share of train the builders hold out as validation (reported)')
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
    report = validate(args.raw_dir, dataset=args.dataset, layout=args.layout,
                      images=args.images, masks=args.masks, train_list=args.train_list,
                      test_list=args.test_list, decode=not args.quick,
                      mask_threshold=args.mask_threshold)
  except raw_data.RawDataError as e:
    print(e)
    if args.dataset:
      print(raw_data.manual_instructions(args.dataset, args.raw_dir))
    return 1
  print(report.format(max_per_code=args.max_per_code))
  if not report.errors:
    train, val = raw_data.carve_validation(report.entries['train'], args.val_fraction)
    print(f'Built splits: train {len(train)}, validation {len(val)} (val_fraction '
          f'{args.val_fraction:g}, carved from train), test {len(report.entries["test"])}.')
  return 1 if report.errors else 0


if __name__ == '__main__':
  sys.exit(main())
