"""Run the embedded demo: ``make demo`` (or ``python tools/demo.py``).

Generates the mini-benchmark, pre-trains the tiny ViT (both cached under
``.cache/embedded``), fine-tunes every method on every generated task and
prints the results table; when the TR-PTS parameters + tokens row ran, it
also draws the kept/fused patches of four test images of the first task
with ``tools/visualize_tokens.py`` (``work_dirs/demo/tokens.png``).
"""
import argparse
import os.path as osp
import subprocess
import sys
import time

import mmtrpts  # noqa: F401
from mmengine.config import DictAction

from mmtrpts.apis.demo import run_demo

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(ROOT, 'configs', 'embedded')
METHODS = {
    'full fine-tuning': osp.join(CONFIGS, 'vit-tiny_full-ft_mini-vtab.py'),
    'linear probing': osp.join(CONFIGS, 'vit-tiny_linear-probe_mini-vtab.py'),
    'TR-PTS (parameters)': osp.join(CONFIGS,
                                    'vit-tiny_trpts-param_mini-vtab.py'),
    'TR-PTS (params + tokens)': osp.join(CONFIGS,
                                         'vit-tiny_trpts_mini-vtab.py'),
    'GPS rule': osp.join(CONFIGS, 'vit-tiny_gps_mini-vtab.py'),
    'RLRR': osp.join(CONFIGS, 'vit-tiny_rlrr_mini-vtab.py'),
    'Sparse-Tuning': osp.join(CONFIGS, 'vit-tiny_sparse-tuning_mini-vtab.py'),
    'SPT-LoRA': osp.join(CONFIGS, 'vit-tiny_spt-lora_mini-vtab.py'),
}
# `location`, `counting` and `texture` are generated too but left out by
# default to keep the demo under 5 minutes on a 2-core CPU; add them with
# --tasks (e.g. --tasks location orientation).
DEFAULT_TASKS = ('orientation', )
TOKENS_METHOD = 'TR-PTS (params + tokens)'


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        '--tasks',
        nargs='+',
        default=list(DEFAULT_TASKS),
        help='generated tasks to run (counting, location, '
        'orientation, texture)')
    parser.add_argument(
        '--methods',
        nargs='+',
        choices=list(METHODS),
        help='rows of the table to run')
    parser.add_argument(
        '--cache-dir', default=osp.join(ROOT, '.cache', 'embedded'))
    parser.add_argument(
        '--work-dir', default=osp.join(ROOT, 'work_dirs', 'demo'))
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='overrides applied to every run')
    parser.add_argument(
        '--verbose', action='store_true', help='show the runners\' INFO logs')
    return parser.parse_args()


def draw_kept_tokens(run_dir: str,
                     task_root: str,
                     out: str,
                     num_images: int = 4) -> None:
    """``tools/visualize_tokens.py`` on the first test images of a run.

    Args:
        run_dir (str): Work dir of a finished token-selection run (its
            dumped config and ``last_checkpoint``).
        task_root (str): The task's folder of the generated benchmark.
        out (str): The PNG to write.
        num_images (int): Test images drawn (one row each).
    """
    with open(osp.join(run_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    with open(osp.join(task_root, 'test.txt')) as f:
        images = [
            osp.join(task_root,
                     line.split()[0]) for line, _ in zip(f, range(num_images))
        ]
    config = osp.join(run_dir, osp.basename(METHODS[TOKENS_METHOD]))
    subprocess.run([
        sys.executable,
        osp.join(ROOT, 'tools', 'visualize_tokens.py'), config, checkpoint,
        *images, '--out', out
    ],
                   check=True)


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
    if TOKENS_METHOD in methods:
        task = args.tasks[0]
        draw_kept_tokens(
            osp.join(args.work_dir, TOKENS_METHOD.replace(' ', '-'), task),
            osp.join(args.cache_dir, 'mini-vtab', task),
            osp.join(args.work_dir, 'tokens.png'))


if __name__ == '__main__':
    main()
