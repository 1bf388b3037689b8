"""Publish finished runs (a sweep's work root) as model-zoo entries.

For every complete run under the work root(s): export its final checkpoint
as a delta against the pretrained base, name it
``<model>_<YYYYMMDD>-<sha256[:8]>.pth`` in the zoo folder, fill the
metafile's ``Results`` (test top-1 at the last epoch and the best over
epochs, with the base checkpoint) and ``Weights`` (``mmtrpts-zoo://<file>``),
and write the result table of the README beside each metafile updated.
Runs of configs that no metafile of ``--model-index`` lists (e.g. the
generated mini-VTAB) go into the zoo folder's own metafile and model index.
See :mod:`mmtrpts.results.zoo` and docs/model_zoo.md.

Examples:
    python tools/sweep.py --benchmark fgvc --method trpts --gpus 8
    python tools/misc/publish_zoo.py work_dirs/trpts_fgvc --zoo zoo \\
        --base data/checkpoints/vit-b16_in21k.pth --base-label original
    # users: put the files in zoo/ (or $MMTRPTS_ZOO), then
    #   get_model('trpts_vit-b_cub', pretrained=True)
"""
import argparse
import os.path as osp
import sys
import time

import mmtrpts  # noqa: F401  (stack fixes, registries, model index)

from mmtrpts.results.runs import find_run_dirs
from mmtrpts.results.zoo import BASE_LABELS, publish

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='\n'.join(__doc__.splitlines()[2:]))
    parser.add_argument(
        'work_roots',
        nargs='+',
        metavar='WORK_ROOT',
        help='sweep roots or run dirs (tools/sweep.py --work-root)')
    parser.add_argument(
        '--zoo', required=True, help='the zoo folder to write into')
    parser.add_argument(
        '--base',
        required=True,
        help='the pretrained base checkpoint every run started from')
    parser.add_argument(
        '--base-label',
        required=True,
        help=f'the base, for the tables: {", ".join(BASE_LABELS)} '
        '(ViT-B/16 IN-21k) or any text')
    parser.add_argument(
        '--model-index',
        default=osp.join(ROOT, 'model-index.yml'),
        help='whose metafiles get Results/Weights for the names they list '
        '(default: the repository model-index.yml)')
    parser.add_argument(
        '--date',
        default=time.strftime('%Y%m%d'),
        help='YYYYMMDD in the file names (default: today)')
    parser.add_argument(
        '--weights',
        choices=('state_dict', 'raw'),
        default='state_dict',
        help="'state_dict': the EMA weights when the run used EMAHook; "
        "'raw': the trained ones")
    parser.add_argument(
        '--skip-incomplete',
        action='store_true',
        help='leave out runs that are not complete (listed) instead of '
        'stopping')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    run_dirs = []
    for root in args.work_roots:
        if not osp.isdir(root):
            sys.exit(f'{root}: not a directory')
        found = find_run_dirs(root)
        if not found:
            sys.exit(f'{root}: no run dir (no timestamp folder, no '
                     'sweep.json) below it')
        run_dirs += found
    try:
        entries, left_out = publish(
            run_dirs,
            args.zoo,
            args.base,
            args.base_label,
            args.model_index,
            args.date,
            weights=args.weights,
            skip_incomplete=args.skip_incomplete)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f'publish_zoo: {error}')
    for why in left_out:
        print(f'left out: {why}')
    print(f'published {len(entries)} run(s) into {args.zoo}')


if __name__ == '__main__':
    main()
