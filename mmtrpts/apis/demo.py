"""The end-to-end demo on the embedded default (``make demo``).

1. write the generated mini-benchmark (VTAB-1k layout) unless cached;
2. pre-train the tiny ViT on the generated source task unless cached (two
   spawned data-parallel processes, before any run starts);
3. for every method config and task: train with the stock MMEngine runner
   (train800val200), test on the test split (SPT: its sensitivity pass
   first, which writes the allocation its backbone is built from);
4. print and save one table: top-1 per task, trainable parameters, GFLOPs.

The runs themselves -- the worker pool, each run's ``run.log``, failed
runs and the cache of finished runs' rows -- are
:mod:`mmtrpts.apis.demo_runs`; the component and token-placement ablation
(``tools/demo.py --ablation``) is :mod:`mmtrpts.apis.demo_ablation`.
"""
import glob
import os.path as osp
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config
from mmengine.logging import print_log

from ..datasets.synthetic.mini_vtab import load_object_masks, write_benchmark
from ..efficiency.common import quiet_logs
from ..visualization.token_selection import FusedObjectShare
from .demo_runs import (DemoFailure, DemoJob, failures_of, run_jobs,
                        single_threaded, write_results)
from .embedded_backbone import pretrain_backbone
from .token_inspection import (draw_tokens_with_faithfulness, inspect_tokens,
                               token_faithfulness)


# -- the demo table --------------------------------------------------------
def format_table(results: Dict[str, List[Dict]], tasks: Sequence[str]) -> str:
    """A Markdown table: one row per method, one top-1 column per task.

    A failed run (a row with ``error``) shows ``failed``; the mean then
    shows ``-``, and the parameter and FLOP columns average the method's
    finished runs.
    """
    header = ['method'] + list(tasks) + [
        'mean top-1', 'trainable params', 'trainable %', 'GFLOPs'
    ]
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for method, rows in results.items():
        by_task = {row['task']: row for row in rows if 'error' not in row}
        top1 = [by_task[t]['top1'] for t in tasks if t in by_task]
        cells = [method] + [
            f'{by_task[t]["top1"]:.1f}' if t in by_task else 'failed'
            for t in tasks
        ]
        cells.append(f'{sum(top1) / len(top1):.1f}'
                     if len(top1) == len(tasks) and top1 else '-')
        cells += cost_cells(list(by_task.values()), absolute=True)
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def cost_cells(rows: List[Dict], absolute: bool) -> List[str]:
    """Trainable parameters (count and %) and GFLOPs, averaged over the
    rows (``-`` without rows)."""
    if not rows:
        return ['-'] * (3 if absolute else 2)
    trainable = sum(r['trainable'] for r in rows) / len(rows)
    total = sum(r['total'] for r in rows) / len(rows)
    flops = sum(r['flops'] for r in rows) / len(rows)
    cells = [f'{trainable:,.0f}'] if absolute else []
    return cells + [f'{100 * trainable / total:.2f}', f'{flops / 1e9:.4f}']


def prepare_demo(backbone_config: str,
                 cache_dir: str,
                 tasks: Optional[Sequence[str]] = None,
                 quiet: bool = True) -> Tuple[str, Dict[str, int]]:
    """Write the generated benchmark and pre-train the backbone (cached).

    Args:
        backbone_config (str): Config whose ``model.backbone`` is
            pre-trained on the source task; its ``pretrained`` variable
            says where the checkpoint goes.
        cache_dir (str): Where the generated benchmark is written.
        tasks (Sequence[str], optional): Generated tasks (default: all).
        quiet (bool): No line about the benchmark.

    Returns:
        tuple: The benchmark's root and ``{task: num_classes}``.
    """
    data_root = osp.join(cache_dir, 'mini-vtab')
    task_classes = write_benchmark(
        data_root, **({} if tasks is None else dict(tasks=tasks)))
    if not quiet:
        print_log(
            f'Generated mini-benchmark: {data_root} {task_classes}',
            logger='current')
    backbone_cfg = Config.fromfile(backbone_config)
    pretrain_backbone(backbone_cfg.model.backbone, backbone_cfg.pretrained)
    return data_root, task_classes


def run_methods(methods: Dict[str, str],
                task_classes: Dict[str, int],
                data_root: str,
                work_root: str,
                cfg_options: Optional[dict] = None,
                quiet: bool = True,
                workers: Optional[int] = None,
                rerun: bool = False) -> str:
    """Every method on every task: ``results.{md,json}`` and the table.

    ``results.md`` holds the table, ``results.json`` the rows of every
    method (per task: ``top1``, ``trainable``, ``total``, ``flops``,
    ``seconds``, ``threads``, ``log``; a failed run: ``error`` and
    ``log``).  Call :func:`prepare_demo` first.

    Args:
        methods (dict): Table row name -> config file.
        task_classes (dict): Task -> class count (table columns, in order).
        data_root (str): The generated benchmark.
        work_root (str): Parent of the runs' work dirs and of the results.
        cfg_options (dict, optional): Overrides applied to every run.
        quiet (bool): Runs in single-threaded worker processes, each run's
            output in its ``run.log``, one console line per run.  False:
            runs in this process, one at a time, with the runners' output.
        workers (int, optional): Worker processes (default
            :func:`~mmtrpts.apis.demo_runs.default_workers`).
        rerun (bool): Ignore the rows of earlier identical runs.

    Returns:
        str: The Markdown table (``format_table``).

    Raises:
        DemoFailure: after writing the finished runs' rows, when a run
            failed.
    """
    jobs = [
        DemoJob(method, task, config) for method, config in methods.items()
        for task in task_classes
    ]
    rows = run_jobs(
        jobs,
        task_classes,
        data_root,
        work_root,
        cfg_options,
        workers=workers,
        quiet=quiet,
        rerun=rerun)
    results = OrderedDict(
        (method, [rows[(method, task)] for task in task_classes])
        for method in methods)
    table = format_table(results, list(task_classes))
    write_results(work_root, 'results', results, table)
    failures = failures_of(rows)
    if failures:
        raise DemoFailure(table, failures)
    return table


def run_token_faithfulness(run_work_dir: str,
                           task_dir: str,
                           out_file: Optional[str] = None,
                           num_drawn: int = 4) -> FusedObjectShare:
    """How faithful a finished token-selection run's fusing is.

    Runs every test image of the generated task through the run's final
    checkpoint and scores the patches fused by its last selection block
    against the task's object masks (:func:`mmtrpts.visualization.
    fused_object_share`): uniformly random fusing puts the object's area
    share on the object; an object-centred [CLS] attention much less.

    Args:
        run_work_dir (str): Work dir of a finished run of a
            ``TokenKeepFuseViT`` config (its dumped config and
            ``last_checkpoint``).
        task_dir (str): The task's folder of the generated benchmark (its
            ``test.txt`` and ``masks/test.npy``).
        out_file (str, optional): Also draw the first ``num_drawn`` test
            images with their kept / fused patches and object outlines.
        num_drawn (int): Images drawn into ``out_file``.

    Returns:
        FusedObjectShare: The score over all test images.
    """
    with open(osp.join(run_work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    configs = glob.glob(osp.join(run_work_dir, '*.py'))
    if len(configs) != 1:
        raise FileNotFoundError(
            f'expected exactly one dumped config in {run_work_dir}, found '
            f'{sorted(configs)}')
    with open(osp.join(task_dir, 'test.txt')) as f:
        images = [
            osp.join(task_dir,
                     line.split()[0]) for line in f if line.strip()
        ]
    masks = load_object_masks(task_dir, 'test')
    with single_threaded(), quiet_logs():
        inspection = inspect_tokens(configs[0], checkpoint, images)
    if out_file is None:
        return token_faithfulness(inspection, masks)
    return draw_tokens_with_faithfulness(
        inspection, masks, out_file, num_images=num_drawn)
