"""Run the embedded demo: ``make demo`` (or ``python tools/demo.py``).

Generates the mini-benchmark, pre-trains the tiny ViT (both cached under
``.cache/embedded``), fine-tunes every method on every generated task and
prints the results table.
"""
import argparse
import os.path as osp
import time

import mmtrpts  # noqa: F401
from mmengine.config import DictAction

from mmtrpts.embedded.demo import run_demo

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(ROOT, 'configs', 'embedded')
METHODS = {
    'full fine-tuning': osp.join(CONFIGS, 'vit-tiny_full-ft_mini-vtab.py'),
    'linear probing': osp.join(CONFIGS, 'vit-tiny_linear-probe_mini-vtab.py'),
    'TR-PTS (parameters)': osp.join(CONFIGS,
                                    'vit-tiny_trpts-param_mini-vtab.py'),
    'TR-PTS (params + tokens)': osp.join(CONFIGS,
                                         'vit-tiny_trpts_mini-vtab.py'),
}
# `counting` and `texture` are generated too but left out by default to keep
# the demo under 5 minutes on a 2-core CPU; add them with --tasks.
DEFAULT_TASKS = ('location', 'orientation')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--tasks', nargs='+', default=list(DEFAULT_TASKS),
                        help='generated tasks to run (counting, location, '
                        'orientation, texture)')
    parser.add_argument('--methods', nargs='+', choices=list(METHODS),
                        help='rows of the table to run')
    parser.add_argument('--cache-dir', default=osp.join(ROOT, '.cache',
                                                        'embedded'))
    parser.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs',
                                                       'demo'))
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='overrides applied to every run')
    parser.add_argument('--verbose', action='store_true',
                        help='show the runners\' INFO logs')
    return parser.parse_args()


def main():
    args = parse_args()
    methods = {name: METHODS[name] for name in (args.methods or METHODS)}
    start = time.time()
    table = run_demo(
        methods,
        backbone_config=METHODS['full fine-tuning'],
        cache_dir=args.cache_dir,
        work_root=args.work_dir,
        tasks=args.tasks,
        cfg_options=args.cfg_options,
        quiet=not args.verbose)
    print(f'\nmmtrpts demo on the generated mini-benchmark '
          f'(top-1 % on the test split, {time.time() - start:.0f} s):\n')
    print(table)


if __name__ == '__main__':
    main()
