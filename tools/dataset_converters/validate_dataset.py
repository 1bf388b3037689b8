"""Validate a VTAB-1k or FGVC data tree and print a report.

Checks split files, counts against the known sizes, labels or class ids,
overlaps and that every listed image is readable (docs/benchmarks.md §1-2; see
:mod:`mmtrpts.datasets.preparation`). Optionally writes a sha256 manifest
that pins this copy of the data, or checks the tree against one. Exits
with status 1 when the report has an error.

Examples::

    # all 19 VTAB-1k tasks, every image decoded
    python tools/dataset_converters/validate_dataset.py vtab1k data/vtab-1k
    # two tasks, image existence only, json report
    python tools/dataset_converters/validate_dataset.py vtab1k \\
        data/vtab-1k --tasks cifar100 dtd --no-images --out report.json
    # pin this copy, then check another copy against it
    python tools/dataset_converters/validate_dataset.py vtab1k \\
        data/vtab-1k --manifest-out vtab-1k.manifest.json
    python tools/dataset_converters/validate_dataset.py vtab1k \\
        /other/vtab-1k --manifest-check vtab-1k.manifest.json
    # FGVC with RLRR's Stanford Dogs layout
    python tools/dataset_converters/validate_dataset.py fgvc data/fgvc \\
        --datasets dogs --folder dogs=StanfordDogs --image-subfolder dogs=
"""
import argparse
import json
import sys
from typing import Dict, List, Optional

from mmtrpts.datasets.preparation import (Report, check_fgvc, check_vtab1k,
                                          format_report)
from mmtrpts.datasets.preparation.manifest import (build_manifest,
                                                   load_manifest,
                                                   verify_manifest,
                                                   write_manifest)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        'root',
        metavar='ROOT',
        help='folder holding the task or data-set folders')
    common.add_argument(
        '--no-images',
        action='store_true',
        help='do not decode the images, only check that they exist')
    common.add_argument(
        '--manifest-out',
        metavar='FILE',
        help='write a sha256 manifest of the split files and images '
        '(refused when the tree has errors)')
    common.add_argument(
        '--manifest-check',
        metavar='FILE',
        help='check the tree against a manifest; a missing, changed or '
        'unpinned file is an error')
    common.add_argument(
        '--out', metavar='FILE', help='also write the report as json')
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest='benchmark', required=True)
    vtab = sub.add_parser(
        'vtab1k',
        parents=[common],
        help='VTAB-1k, NOAH/SSF layout',
        description='Check a VTAB-1k tree (NOAH/SSF layout).')
    vtab.add_argument(
        '--tasks',
        nargs='+',
        metavar='TASK',
        help='task folders or aliases (default: all 19)')
    fgvc = sub.add_parser(
        'fgvc',
        parents=[common],
        help='FGVC, VPT json splits',
        description='Check an FGVC tree of VPT json splits.')
    fgvc.add_argument(
        '--datasets',
        nargs='+',
        metavar='NAME',
        help='cub, nabirds, flowers, dogs, cars (default: all five)')
    fgvc.add_argument(
        '--folder',
        action='append',
        default=[],
        metavar='NAME=FOLDER',
        help='data-set folder under ROOT (default: the GPS names); '
        'repeat for several data sets')
    fgvc.add_argument(
        '--image-subfolder',
        action='append',
        default=[],
        metavar='NAME=SUBFOLDER',
        help="folder the json keys are relative to; 'dogs=' for the "
        'data-set folder itself (default: the GPS layout); repeat for '
        'several data sets')
    args = parser.parse_args(argv)
    if args.benchmark == 'fgvc':
        args.folder = _pairs(fgvc, '--folder', args.folder)
        args.image_subfolder = _pairs(fgvc, '--image-subfolder',
                                      args.image_subfolder)
    return args


def _pairs(parser: argparse.ArgumentParser, option: str,
           values: List[str]) -> Dict[str, str]:
    """Parse ``NAME=VALUE`` items."""
    pairs = {}
    for item in values:
        if '=' not in item:
            parser.error(f'{option} takes NAME=VALUE items, got {item!r}')
        name, value = item.split('=', 1)
        pairs[name] = value
    return pairs


def run_checks(args: argparse.Namespace) -> Report:
    """The tree check selected by ``args``."""
    progress = sys.stderr.isatty()
    if args.benchmark == 'vtab1k':
        return check_vtab1k(
            args.root,
            args.tasks,
            check_images=not args.no_images,
            progress=progress)
    return check_fgvc(
        args.root,
        args.datasets,
        folders=args.folder,
        image_subfolders=args.image_subfolder,
        check_images=not args.no_images,
        progress=progress)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        report = run_checks(args)
        if args.manifest_check:
            manifest = load_manifest(args.manifest_check, args.benchmark)
            report.findings.extend(
                verify_manifest(args.root, manifest, report.files,
                                args.manifest_check, sys.stderr.isatty()))
    except (ValueError, FileNotFoundError) as exc:  # bad names, manifest
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(format_report(report))
    if args.out:
        with open(args.out, 'w', encoding='utf-8') as f:
            json.dump(report.to_dict(), f, indent=1)
            f.write('\n')
    if args.manifest_out:
        if report.errors:
            print(f'Not writing {args.manifest_out}: the tree has errors; '
                  'a manifest must pin a valid copy.')
        else:
            write_manifest(
                build_manifest(args.root, args.benchmark, report.files,
                               sys.stderr.isatty()), args.manifest_out)
            print(f'Wrote {args.manifest_out}: sha256 of '
                  f'{len(report.files)} files')
    return 1 if report.errors else 0


if __name__ == '__main__':
    sys.exit(main())
