"""Run the embedded demo: ``make demo`` (or ``python tools/demo.py``).

Generates the mini-benchmark, pre-trains the tiny ViT (both cached under
``.cache/embedded``), fine-tunes every method on every generated task in a
pool of single-threaded worker processes and prints the results table
(``work_dirs/demo/results.{md,json}``).  When the TR-PTS parameters + tokens
row ran, it measures on every task with objects how faithful the token
fusing is (the share of fused patches on the object against the object's
area share, over all test images) and draws the kept/fused patches of four
test images with the objects outlined (``work_dirs/demo/tokens.png`` for the
first task, ``tokens_<task>.png`` for the others, scores in
``faithfulness.json``).

The console gets one line per finished run; each run's own output (the
runner's INFO log, warnings) is in ``work_dirs/demo/<method>/<task>/run.log``
(``--verbose``: everything on the console, one run at a time).  A run whose
config, data, pre-trained checkpoint and code are unchanged since it last
finished is not trained again: its row is reused (``--rerun`` forces new
runs).  When a run fails, the others still finish and are written, and the
demo exits with status 1.

``--ablation`` runs TR-PTS's two ablations on the structured tasks instead
(``work_dirs/demo/ablation.{md,json}``):

- components, in the paper's order: neither (linear probing), tokens only
  (linear probing with token selection in the blocks that full TR-PTS
  chose on the same task: a frozen backbone has no selected parameters to
  place tokens by, so the placement is read from that run), parameters only
  (TR-PTS parameters), both (full TR-PTS);
- token placement of full TR-PTS (rho 0.95, 3 blocks): dense, random
  (seed 0), sparse (the paper's), with the chosen blocks per task.

The demo's own runs (linear probing, TR-PTS rows) are shared with the
ablation: a finished demo's identical runs are reused.
"""
import argparse
import json
import os.path as osp
import sys
import time
import warnings
from typing import List

# mmcv-lite (the pinned stack) has no compiled ops: importing
# mmcv.cnn.bricks.transformer warns that MultiScaleDeformableAttention is
# missing, which nothing here uses.  Set before the imports below, so the
# demo's spawned workers (which import this file first) skip it too.
warnings.filterwarnings(
    'ignore',
    message='Fail to import ``MultiScaleDeformableAttention``',
    category=UserWarning)

import mmtrpts  # noqa: F401,E402
from mmengine.config import DictAction  # noqa: E402

from mmtrpts.apis.demo import (  # noqa: E402
    prepare_demo, run_methods, run_token_faithfulness)
from mmtrpts.apis.demo_ablation import run_ablation  # noqa: E402
from mmtrpts.apis.demo_runs import (  # noqa: E402
    RUN_LOG, DemoFailure, default_workers, display_path, run_dir)
from mmtrpts.datasets.synthetic.tasks import TARGET_TASKS  # noqa: E402

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
TOKENS_METHOD = 'TR-PTS (params + tokens)'
#: Rows of the default table (``--methods`` overrides; ``--methods all``
#: adds the related methods): the two baselines and TR-PTS with and without
#: token selection, which keeps ``make demo`` under 5 minutes on an idle
#: 2-core CPU.
DEFAULT_METHODS = ('full fine-tuning', 'linear probing', 'TR-PTS (parameters)',
                   TOKENS_METHOD)
#: The structured tasks of the paper's ablations (dSprites location and
#: orientation).  `counting` and `texture` are generated too; add them with
#: --tasks (docs/demo.md says how TR-PTS fares on them).
DEFAULT_TASKS = ('location', 'orientation')
#: Tasks of ``--ablation`` (``--tasks`` overrides).
ABLATION_TASKS = DEFAULT_TASKS
#: The token faithfulness target: fused patches land on the object at most
#: half as often as uniformly random fusing would put them there.
FAITHFULNESS_TARGET = 0.5
#: ``--ablation``: the demo rows that are its neither / parameters only /
#: both rows (the runs are shared).
ABLATION_METHODS = dict(
    linear_probe='linear probing',
    parameters='TR-PTS (parameters)',
    full=TOKENS_METHOD)


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        '--tasks',
        nargs='+',
        help='generated tasks to run (counting, location, orientation, '
        f'texture; default {" ".join(DEFAULT_TASKS)}, with --ablation '
        f'{" ".join(ABLATION_TASKS)})')
    parser.add_argument(
        '--methods',
        nargs='+',
        choices=list(METHODS) + ['all'],
        default=list(DEFAULT_METHODS),
        metavar='METHOD',
        help='rows of the table to run, or all (default: '
        f'{", ".join(map(repr, DEFAULT_METHODS))}; all: '
        f'{", ".join(map(repr, METHODS))})')
    parser.add_argument(
        '--ablation',
        action='store_true',
        help='run the component and token-placement ablations of TR-PTS '
        'instead of the methods table')
    parser.add_argument(
        '--workers',
        type=int,
        default=default_workers(),
        help='worker processes, one torch thread each (default: '
        'min(2, usable cores))')
    parser.add_argument(
        '--rerun',
        action='store_true',
        help='train again runs whose earlier identical run finished')
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
        '--verbose',
        action='store_true',
        help='the runners\' output on the console: every run in this '
        'process, one at a time (no workers, no run.log)')
    args = parser.parse_args()
    if args.workers < 1:
        parser.error(f'--workers must be >= 1, got {args.workers}')
    if args.tasks is None:
        args.tasks = list(ABLATION_TASKS if args.ablation else DEFAULT_TASKS)
    if 'all' in args.methods:
        args.methods = list(METHODS)
    return args


def report_token_faithfulness(work_root: str, data_root: str,
                               tasks: List[str]) -> List[dict]:
    """Score the fusing of the TR-PTS params + tokens runs (object tasks).

    Prints one line per task, draws ``tokens.png`` (first task) or
    ``tokens_<task>.png`` and writes ``faithfulness.json``.

    Returns:
        List[dict]: Failures (as the runs' failures), empty when all went
        well.
    """
    scores, failures = {}, []
    for index, task in enumerate(tasks):
        if not TARGET_TASKS[task].has_objects:
            continue
        out = osp.join(work_root,
                       'tokens.png' if index == 0 else f'tokens_{task}.png')
        try:
            share = run_token_faithfulness(
                run_dir(work_root, TOKENS_METHOD, task),
                osp.join(data_root, task), out)
        except Exception as error:  # reported like a failed run
            failures.append(
                dict(run='token faithfulness', task=task, error=repr(error)))
            continue
        verdict = 'met' if share.ratio <= FAITHFULNESS_TARGET else 'NOT met'
        print(f'Token faithfulness ({task}): {share}; target <= '
              f'{FAITHFULNESS_TARGET:.2f}x: {verdict}  [{display_path(out)}]')
        scores[task] = dict(vars(share), image=out)
    if scores:
        with open(osp.join(work_root, 'faithfulness.json'), 'w') as f:
            json.dump(scores, f, indent=1)
    return failures


def main():
    args = parse_args()
    start = time.time()
    quiet = not args.verbose
    data_root, task_classes = prepare_demo(METHODS['full fine-tuning'],
                                           args.cache_dir, args.tasks, quiet)
    common = dict(
        task_classes=task_classes,
        data_root=data_root,
        work_root=args.work_dir,
        cfg_options=args.cfg_options,
        quiet=quiet,
        workers=args.workers,
        rerun=args.rerun)
    failures = []
    try:
        if args.ablation:
            text = run_ablation(
                **common, **{
                    row: (method, METHODS[method])
                    for row, method in ABLATION_METHODS.items()
                })
        else:
            methods = {name: METHODS[name] for name in args.methods}
            text = run_methods(methods, **common)
    except DemoFailure as error:
        text, failures = error.table, error.failures
    name = 'ablation' if args.ablation else 'results'
    title = ('TR-PTS ablations' if args.ablation else 'mmtrpts demo')
    print(f'\n{title} on the generated mini-benchmark (top-1 % on the '
          f'test split, {time.time() - start:.0f} s):\n')
    print(text)
    results = osp.join(args.work_dir, f'{name}.{{md,json}}')
    print(f'\nResults: {display_path(results)}')
    if quiet:
        logs = osp.join(args.work_dir, '<run>', '<task>', RUN_LOG)
        print(f'Logs of the runs: {display_path(logs)}')
    if not args.ablation and TOKENS_METHOD in args.methods:
        finished = [
            task for task in args.tasks
            if not any(f['run'] == TOKENS_METHOD and f['task'] == task
                       for f in failures)
        ]
        print()
        failures += report_token_faithfulness(args.work_dir, data_root,
                                              finished)
    if failures:
        print(f'\n{len(failures)} run(s) failed:', file=sys.stderr)
        for failure in failures:
            log = (f'  log: {display_path(failure["log"])}'
                   if failure.get('log') else '')
            print(
                f'  {failure["run"]} | {failure["task"]}: '
                f'{failure["error"]}{log}',
                file=sys.stderr)
        sys.exit(1)


if __name__ == '__main__':
    main()
