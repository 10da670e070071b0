"""Every dataset irstd_jax knows, in one table: what the configs, the validator and the
TFDS builders read.

Adding a dataset is one `DatasetSpec` entry below plus its builder folder
`tfds_builders/<name>/` (a `Builder` subclassing `tfds_builders.base.IrstdBuilder` in a few
lines, README.md, CITATIONS.bib, dummy_data/, a test). It is then trainable by name:
`--config=configs/base.py:<name>`, `configs/full_model.py:<name>`, the ablation rows
`configs/ablation/<row>.py:<name>`; `python -m irstd_jax.tfds_sources <name>` builds it and
`python -m irstd_jax.validate_dataset FOLDER --dataset <name>` checks its folder. A file
`configs/<name>.py` is optional (overrides of that dataset's own). Nothing else lists
dataset names.

Plain Python: importing this module pulls in neither TFDS nor numpy.
"""
from __future__ import annotations

import dataclasses
import importlib

TFDS_LOADER = 'irstd_jax.tfds_sources:load_from_config'
# The splits every dataset serves: 'validation' is the official validation list where the
# named split has one, else carved from the official train list (never from test).
SPLITS = ('train', 'validation', 'test')
# The share of the official train list carved as validation unless a config says otherwise.
DEFAULT_VAL_FRACTION = 0.1


@dataclasses.dataclass(frozen=True)
class NamedSplit:
  """One published train/test split of a dataset, by its split-list files.

  Paths are relative to the dataset folder; None means "detect" (raw_layout.find_layout).
  """
  name: str
  train: str | None = None
  test: str | None = None
  validation: str | None = None  # an official validation list: used instead of a carve
  counts: tuple[int, int] | None = None  # official (train, test) sizes; train includes the
  #                                        official validation list when there is one
  description: str = ''


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """One dataset: how to get it, what a user must put where, how it is split."""
  name: str  # the config's data.name and the TFDS builder name
  title: str
  download: str = ''  # official download page(s), in words
  tree: str = ''  # the expected folder tree under the manual directory
  aliases: tuple[str, ...] = ()  # folder / BasicIRSTD names (compared alphanumerics only)
  homepage: str | None = None
  # A published benchmark split defines the numbers everyone reports, so images duplicated
  # across its lists are reported (warning) but kept; in a user's own split they are an error.
  official: bool = True
  splits: tuple[NamedSplit, ...] = (NamedSplit('official'),)  # the first is the default
  parts: tuple[str, ...] = ()  # a union of these datasets, each from its own sub-folder
  per_folder: bool = False  # one TFDS config per raw folder (a user's own data)
  has_builder: bool = True  # tfds_builders/<name>/
  has_config: bool = True  # a config can name it (configs/base.py:<name>, full_model, rows)
  loader: str = TFDS_LOADER  # 'module:function(data_config, split, *, seed)'

  @property
  def split_names(self) -> tuple[str, ...]:
    return tuple(s.name for s in self.splits)

  def split(self, name: str | None = None) -> NamedSplit:
    """The named split ('' or None: the default). Raises ValueError naming the choices."""
    if not name:
      return self.splits[0]
    for s in self.splits:
      if s.name == name:
        return s
    raise ValueError(f'{self.name} has no split {name!r}; choose one of '
                     f'{", ".join(self.split_names)} (data.split_lists)')


_NUAA_TREE = (
    'images/Misc_1.png ...                 (427 images; L, RGB and RGBA PNGs, sizes vary)\n'
    'masks/Misc_1_pixels0.png ...          (their masks; .xml files beside them are ignored)\n'
    'idx_427/train.txt, val.txt, test.txt  (the ACM split, data.split_lists=acm: 341 / 86)\n'
    'img_idx/train_NUAA-SIRST.txt          (BasicIRSTD\'s split, data.split_lists=basicirstd,\n'
    'img_idx/test_NUAA-SIRST.txt            the default: 213 / 214; copy these two files\n'
    '                                       from BasicIRSTD\'s NUAA-SIRST folder)')

DATASETS: dict[str, DatasetSpec] = {s.name: s for s in (
    DatasetSpec(
        name='synthetic', title='synthetic infrared scenes (built in)',
        loader='irstd_jax.synthetic:load_from_config', has_builder=False, official=False,
        splits=(NamedSplit('generated', description='data.synthetic.num_{train,val,test}'),)),
    DatasetSpec(
        name='irstd1k', title='IRSTD-1k',
        download=('the ISNet page https://github.com/RuiZhang97/ISNet (README: "IRSTD-1k" '
                  'dataset, Google Drive / 139 cloud links); extract the archive'),
        tree=('IRSTD1k_Img/XDU0.png ... XDU1000.png    (1001 images, 512x512)\n'
              'IRSTD1k_Label/XDU0.png ... XDU1000.png  (their masks)\n'
              'trainval.txt                            (800 ids, one per line)\n'
              'test.txt                                (201 ids)'),
        aliases=('irstd1k',), homepage='https://github.com/RuiZhang97/ISNet',
        splits=(NamedSplit('official', counts=(800, 201),
                           description='trainval.txt / test.txt (ISNet)'),)),
    DatasetSpec(
        name='nudt_sirst', title='NUDT-SIRST',
        download=('the DNANet page https://github.com/YeRen123455/Infrared-Small-Target-'
                  'Detection (README: "NUDT-SIRST" dataset, Google Drive / Baidu links); '
                  'extract the archive'),
        tree=('images/000001.png ... 001327.png  (1327 images, 256x256)\n'
              'masks/000001.png ... 001327.png   (their masks)\n'
              '50_50/train.txt                   (663 ids, one per line)\n'
              '50_50/test.txt                    (664 ids)'),
        aliases=('nudtsirst', 'nudt'),
        homepage='https://github.com/YeRen123455/Infrared-Small-Target-Detection',
        splits=(NamedSplit('official', counts=(663, 664),
                           description='50_50/train.txt / 50_50/test.txt (DNANet)'),)),
    DatasetSpec(
        name='nuaa_sirst', title='NUAA-SIRST (SIRST v1)',
        download=('the SIRST page https://github.com/YimianDai/sirst (images/, masks/, '
                  'idx_427/); BasicIRSTD\'s copy https://github.com/XinyiYing/BasicIRSTD '
                  '(datasets/NUAA-SIRST with img_idx/) works as it is'),
        tree=_NUAA_TREE, aliases=('nuaasirst', 'sirst', 'nuaa', 'sirstv1'),
        homepage='https://github.com/YimianDai/sirst',
        splits=(
            NamedSplit('basicirstd', train='img_idx/train_NUAA-SIRST.txt',
                       test='img_idx/test_NUAA-SIRST.txt', counts=(213, 214),
                       description='BasicIRSTD / SCTransNet lists; validation carved from train'),
            NamedSplit('acm', train='idx_427/train.txt', validation='idx_427/val.txt',
                       test='idx_427/test.txt', counts=(341, 86),
                       description='ACM (Dai et al.) idx_427 lists; the official val.txt is '
                                   'the validation split'),
        )),
    DatasetSpec(
        name='sirst3', title='SIRST3 (NUAA-SIRST + NUDT-SIRST + IRSTD-1k)',
        download=('the three datasets from their pages (see nuaa_sirst, nudt_sirst, irstd1k), '
                  'or BasicIRSTD\'s SIRST3 folder https://github.com/XinyiYing/BasicIRSTD'),
        tree=('NUAA-SIRST/   (as for nuaa_sirst, with BasicIRSTD\'s img_idx/ lists: 213 / 214)\n'
              'NUDT-SIRST/   (as for nudt_sirst: 663 / 664)\n'
              'IRSTD-1k/     (as for irstd1k: 800 / 201)\n'
              '  or BasicIRSTD\'s merged folder: images/, masks/, img_idx/train_SIRST3.txt,\n'
              '  img_idx/test_SIRST3.txt'),
        aliases=('sirst3',), homepage='https://github.com/XinyiYing/BasicIRSTD',
        parts=('nuaa_sirst', 'nudt_sirst', 'irstd1k'),
        splits=(NamedSplit('basicirstd', counts=(1676, 1079),
                           description='the union of each part\'s BasicIRSTD lists'),)),
    DatasetSpec(
        name='sirst_uavb', title='SIRST-UAVB',
        download=('the PConv / SD-loss page https://github.com/JN-Yang/PConv-SDloss-Data '
                  '(README: "SIRST-UAVB", Google Drive / Baidu links); extract the archive'),
        tree=('images/all/<id>.jpg  (about 3000 video frames; images/<id>.jpg works too)\n'
              'masks/<id>.jpg       (their masks; JPEG masks are thresholded at 127)\n'
              'train.txt            (training ids, one per line)\n'
              'val.txt              (the held-out ids; used as the test split. A test.txt, if\n'
              '                      present, is used instead)\n'
              'The lists share many duplicate frames: data.deduplicate=exact drops them'),
        aliases=('sirstuavb', 'uavb'), homepage='https://github.com/JN-Yang/PConv-SDloss-Data',
        splits=(NamedSplit('official', description='train.txt / val.txt (val is the test)'),)),
    DatasetSpec(
        name='basicirstd', title='a dataset in BasicIRSTD\'s layout',
        download='BasicIRSTD https://github.com/XinyiYing/BasicIRSTD, or your own files',
        tree=('<Name>/images/<id>.png\n'
              '<Name>/masks/<id>.png\n'
              '<Name>/img_idx/train_<Name>.txt\n'
              '<Name>/img_idx/test_<Name>.txt\n'
              '(set data.subset=<Name>; the manual directory is BasicIRSTD\'s datasets/)'),
        homepage='https://github.com/XinyiYing/BasicIRSTD', official=False, per_folder=True,
        splits=(NamedSplit('basicirstd', description='img_idx/{train,test}_<Name>.txt'),)),
    DatasetSpec(
        name='irstd_folder', title='your own IRSTD dataset',
        download='your own files',
        tree=('images/<id>.png       (png, bmp or jpg; RGB, L, RGBA or palette)\n'
              'masks/<id>.png        (same size as the image; <id>_pixels0.png also works)\n'
              'train.txt             (or trainval.txt: the training ids, one per line)\n'
              'test.txt              (the test ids)'),
        official=False, per_folder=True, has_config=False,
        splits=(NamedSplit('lists', description='the split lists found in the folder'),)),
)}

_OTHER_LAYOUTS = (
    'Other layouts are recognised too: BasicIRSTD (images/, masks/, img_idx/train_<Name>.txt, '
    'img_idx/test_<Name>.txt), DNANet (split lists in 50_50/ or idx_*/), MSHNet (images/, '
    'masks/, trainval.txt, test.txt), ACM/SIRST mask names (<id>_pixels0.png), mmseg '
    '(trainval/images, trainval/masks, test/images, test/masks). Split lists may have CRLF '
    'line ends; images may be png, bmp or jpg in RGB, L, RGBA or palette mode. One extra '
    'folder level (the archive\'s own top folder) is fine.')


def get(name: str) -> DatasetSpec:
  """The spec of `name`; ValueError naming the known datasets otherwise."""
  if name not in DATASETS:
    raise ValueError(f'unknown dataset {name!r}; expected one of {", ".join(DATASETS)}')
  return DATASETS[name]


def names_dataset(folder_or_list_name: str, dataset: str | None) -> bool:
  """Whether a folder or split-list name names `dataset` (its name or an alias), comparing
  lower-cased alphanumerics only: 'NUDT-SIRST' names nudt_sirst. False for None or an
  unknown dataset."""
  spec = DATASETS.get(dataset) if dataset else None
  if spec is None:
    return False
  return _alphanumerics(folder_or_list_name) in {_alphanumerics(a)
                                                 for a in spec.aliases + (spec.name,)}


def _alphanumerics(name: str) -> str:
  return ''.join(c for c in name.lower() if c.isalnum())


def builder_names() -> tuple[str, ...]:
  """Datasets built by TFDS from a manual directory (tfds_builders/<name>/)."""
  return tuple(n for n, s in DATASETS.items() if s.has_builder)


def config_names() -> tuple[str, ...]:
  """Datasets a config can name: `configs/base.py:<name>`, `configs/full_model.py:<name>`."""
  return tuple(n for n, s in DATASETS.items() if s.has_config)


def loader(name: str):
  """The function `(data_config, split, *, seed) -> Sequence[dict]` that serves `name`."""
  module, _, function = get(name).loader.partition(':')
  return getattr(importlib.import_module(module), function)


def manual_instructions(name: str, manual_dir='<manual_dir>') -> str:
  """Says which folder to create for dataset `name` and what to put in it."""
  spec = get(name)
  tree = '\n'.join('    ' + line for line in spec.tree.splitlines())
  return (f'Create the folder {manual_dir} and put the {spec.title} files in it.\n'
          f'  Download: {spec.download}.\n'
          f'  Expected tree:\n    {manual_dir}/\n{tree}\n'
          f'  {_OTHER_LAYOUTS}\n'
          f'  Check the folder before building:\n'
          f'    python -m irstd_jax.validate_dataset {manual_dir} --dataset {name}')
