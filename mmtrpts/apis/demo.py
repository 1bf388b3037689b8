"""The end-to-end demo on the embedded default (``make demo``).

1. write the generated mini-benchmark (VTAB-1k layout) unless cached;
2. pre-train the tiny ViT on the generated source task unless cached;
3. for every method config and task: train with the stock MMEngine runner
   (train800val200), test on the test split (SPT: its sensitivity pass
   first, which writes the allocation its backbone is built from);
4. print and save one table: top-1 per task, trainable parameters, GFLOPs.
"""
import itertools
import json
import os
import os.path as osp
import time
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.runner import Runner

from ..complexity import count_flops, count_parameters
from .run_config import apply_train_flags
from .sensitivity import compute_sensitivity
from .task_config import set_task
from ..datasets.synthetic.mini_vtab import write_benchmark
from .embedded_backbone import pretrain_backbone

_RUN_IDS = itertools.count()


def run_one(config: str, task: str, num_classes: int, data_root: str,
            work_dir: str, cfg_options: Optional[dict] = None,
            quiet: bool = True) -> Dict:
    """Train and test one (config, task) pair; returns its table row."""
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    set_task(cfg, task, num_classes, data_root=data_root)
    # The table reports the test split once, after training, and only the
    # final checkpoint is kept (saving one costs ~1.3 s on a 2-core CPU).
    apply_train_flags(cfg, no_validate=True)
    cfg.default_hooks.checkpoint.interval = cfg.train_cfg.max_epochs
    cfg.work_dir = work_dir
    cfg.experiment_name = (f'{osp.basename(work_dir)}_'
                           f'{time.strftime("%Y%m%d_%H%M%S")}_{next(_RUN_IDS)}')
    if quiet:
        cfg.log_level = 'WARNING'
    start = time.time()
    if cfg.model.backbone.type == 'SPTViT':
        # SPT's structure depends on the task: its sensitivity pass writes
        # the allocation that SPTViT reads when the runner builds it.
        compute_sensitivity(cfg, out=osp.join(work_dir, 'allocation.pth'),
                            progress=not quiet)
    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.test()
    model = runner.model
    params = count_parameters(model)
    # Masked methods keep requires_grad=True on every candidate; the
    # selection hook records how many entries the optimizer really updates.
    trainable = runner.message_hub.runtime_info.get(
        'trainable_params', params['trainable'])
    image_size = cfg.model.backbone.get('img_size', 224)
    return dict(
        task=task,
        top1=float(metrics['accuracy/top1']),
        trainable=trainable,
        total=params['total'],
        flops=count_flops(model, (3, image_size, image_size)),
        seconds=round(time.time() - start, 1))


def format_table(results: Dict[str, List[Dict]], tasks: Sequence[str]) -> str:
    """A Markdown table: one row per method, one top-1 column per task."""
    header = ['method'] + list(tasks) + [
        'mean top-1', 'trainable params', 'trainable %', 'GFLOPs'
    ]
    lines = ['| ' + ' | '.join(header) + ' |',
             '|' + '---|' * len(header)]
    for method, rows in results.items():
        by_task = {row['task']: row for row in rows}
        top1 = [by_task[t]['top1'] for t in tasks]
        trainable = sum(r['trainable'] for r in rows) / len(rows)
        total = sum(r['total'] for r in rows) / len(rows)
        flops = sum(r['flops'] for r in rows) / len(rows)
        cells = [method] + [f'{v:.1f}' for v in top1] + [
            f'{sum(top1) / len(top1):.1f}', f'{trainable:,.0f}',
            f'{100 * trainable / total:.2f}', f'{flops / 1e9:.4f}'
        ]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def run_demo(methods: Dict[str, str], backbone_config: str, cache_dir: str,
             work_root: str, tasks: Optional[Sequence[str]] = None,
             cfg_options: Optional[dict] = None, quiet: bool = True) -> str:
    """Run the demo and return the table (also written to ``work_root``).

    Args:
        methods (dict): Table row name -> config file.
        backbone_config (str): Config whose ``model.backbone`` is
            pre-trained on the source task; its ``pretrained`` variable
            says where the checkpoint goes.
        cache_dir (str): Where the generated benchmark is written.
        work_root (str): Parent of the runs' work dirs.
        tasks (Sequence[str], optional): Generated tasks (default: all).
        cfg_options (dict, optional): Overrides applied to every run.
        quiet (bool): Only warnings from the runners.
    """
    data_root = osp.join(cache_dir, 'mini-vtab')
    task_classes = write_benchmark(data_root, **({} if tasks is None else
                                                 dict(tasks=tasks)))
    print_log(f'Generated mini-benchmark: {data_root} {task_classes}',
              logger='current')
    backbone_cfg = Config.fromfile(backbone_config)
    pretrain_backbone(backbone_cfg.model.backbone, backbone_cfg.pretrained)

    results = OrderedDict()
    for method, config in methods.items():
        results[method] = []
        for task, num_classes in task_classes.items():
            slug = method.replace(' ', '-')
            row = run_one(config, task, num_classes, data_root,
                          osp.join(work_root, slug, task), cfg_options, quiet)
            print_log(f'{method:>18s} | {task:<12s} top-1 {row["top1"]:5.1f}'
                      f'  ({row["seconds"]} s)', logger='current')
            results[method].append(row)
    table = format_table(results, list(task_classes))
    os.makedirs(work_root, exist_ok=True)
    with open(osp.join(work_root, 'results.json'), 'w') as f:
        json.dump(results, f, indent=1)
    with open(osp.join(work_root, 'results.md'), 'w') as f:
        f.write(table + '\n')
    return table
