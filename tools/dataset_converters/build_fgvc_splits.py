"""Build VPT-style FGVC json splits from an official dataset archive.

Writes ``train.json``, ``val.json`` and ``test.json`` (image path relative
to the data set's image sub-folder -> class id) from the official
archive's own files (see :mod:`mmtrpts.datasets.preparation.fgvc_splits`).
Where the archive has no val split (CUB, NABirds, Dogs, Cars), val is a seeded,
class-stratified draw from the official train set of VPT's val size: the
split SIZES match VPT's, its image ids do not. Prefer the published VPT
json files when you have them; existing json files are not overwritten
unless ``--overwrite`` is given. Exits with status 1 on a missing or
malformed official file.

Examples::

    python tools/dataset_converters/build_fgvc_splits.py cub \\
        data/fgvc/CUB_200_2011
    python tools/dataset_converters/build_fgvc_splits.py cars \\
        ~/downloads/stanford_cars --out-dir data/fgvc/stanfordcars --seed 0
    # then check the tree
    python tools/dataset_converters/validate_dataset.py fgvc data/fgvc \\
        --datasets cub cars
"""
import argparse
import sys
from typing import List, Optional

from mmtrpts.datasets.fgvc_meta import FGVC_DATASETS, resolve_fgvc
from mmtrpts.datasets.preparation.fgvc_splits import (build_fgvc_splits,
                                                      write_fgvc_splits)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        'dataset',
        metavar='DATASET',
        help=f'one of {", ".join(FGVC_DATASETS)} (or an alias)')
    parser.add_argument(
        'archive_dir',
        metavar='ARCHIVE_DIR',
        help='the extracted official archive folder')
    parser.add_argument(
        '--out-dir',
        metavar='DIR',
        help='where to write the json files (default: ARCHIVE_DIR, which '
        'is the data-set folder of the GPS layout)')
    parser.add_argument(
        '--seed',
        type=int,
        default=0,
        help='seed of the val draw (default: 0)')
    parser.add_argument(
        '--overwrite', action='store_true', help='replace existing json files')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        info = resolve_fgvc(args.dataset)
        splits = build_fgvc_splits(info.name, args.archive_dir, seed=args.seed)
        paths = write_fgvc_splits(splits, args.out_dir or args.archive_dir,
                                  args.overwrite)
    # missing or malformed official files, existing output, bad names
    except (OSError, ValueError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    published = dict(
        train=info.num_train, val=info.num_val, test=info.num_test)
    for path, (name, mapping) in zip(paths, splits.items()):
        note = ('' if len(mapping) == published[name] else
                '  <- differs from the published size')
        print(f'wrote {path}: {len(mapping)} images, '
              f'{len(set(mapping.values()))} classes (VPT {name} split: '
              f'{published[name]}){note}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
