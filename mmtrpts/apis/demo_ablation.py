"""The demo's ablation (``tools/demo.py --ablation``): the paper's
component table (neither / tokens only / parameters only / both) and its
token-placement table (dense / random / sparse), on the generated tasks.

The ablation's runs go through :func:`mmtrpts.apis.demo_runs.run_jobs`;
its linear-probing, TR-PTS parameters and full TR-PTS runs are the demo's
own (:mod:`mmtrpts.apis.demo`), under their names, so a finished demo's
rows are reused from the results cache instead of training again.
"""
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config

from .demo import cost_cells
from .demo_runs import (DemoFailure, DemoJob, failures_of, run_jobs,
                        write_results)

#: The ablation's component rows, in the paper's order.
COMPONENTS = ('neither', 'tokens only', 'parameters only', 'both')
#: Their names in the table.
COMPONENT_LABELS = {
    'neither': 'neither (linear probing)',
    'tokens only': 'tokens only',
    'parameters only': 'parameters only (TR-PTS parameters)',
    'both': 'both (full TR-PTS)',
}
#: The placement ablation's token-placement modes.
PLACEMENT_MODES = ('dense', 'random', 'sparse')
#: Work-dir names of the runs only the ablation has.
TOKENS_ONLY_RUN = 'ablation tokens only'
PLACEMENT_RUN = 'ablation placement {}'
#: Backbone settings that the "tokens only" row copies from full TR-PTS.
TOKEN_ARGS = ('type', 'keep_rate', 'keep_round', 'fuse')


# -- the ablation ----------------------------------------------------------
@dataclass
class AblationPlan:
    """The ablation's runs and which run fills which table row.

    Attributes:
        jobs (list[DemoJob]): Every run, in start order.
        components (list[tuple]): ``(row, run)`` of the component table,
            rows in :data:`COMPONENTS` order.
        placements (list[tuple]): ``(mode, run)`` of the placement table.
        tasks (list[str]): The table columns.
    """
    jobs: List[DemoJob]
    components: List[Tuple[str, str]]
    placements: List[Tuple[str, str]]
    tasks: List[str]


def plan_ablation(tasks: Sequence[str],
                  linear_probe: Tuple[str, str],
                  parameters: Tuple[str, str],
                  full: Tuple[str, str],
                  placement_key: str = 'custom_hooks.0.token_placement.mode',
                  full_mode: str = 'sparse') -> AblationPlan:
    """The runs of the component and placement ablations (pure).

    Component rows: *neither* is the linear-probing run, *parameters
    only* the TR-PTS parameter-selection run and *both* the full TR-PTS
    run -- the demo's own runs, under their names, so a finished demo's
    rows are reused.  *Tokens only* is linear probing with the full run's
    token selection at the blocks that the full run chose on the same task
    (a frozen backbone has no selected parameters to place tokens by): it
    runs after that run, and :func:`tokens_only_options` derives it.
    Placement rows: full TR-PTS with ``placement_key`` set to each of
    :data:`PLACEMENT_MODES`; ``full_mode`` (the config's own mode) is the
    full run itself.

    Args:
        tasks (Sequence[str]): Generated tasks.
        linear_probe, parameters, full (tuple): ``(run name, config)`` of
            linear probing, TR-PTS parameters and full TR-PTS.
        placement_key (str): The config key of the placement mode.
        full_mode (str): The full config's placement mode.

    Returns:
        AblationPlan: Full runs first (the tokens-only runs wait for
        them), then the other component and placement runs.
    """
    tasks = list(tasks)
    full_run, full_config = full
    placement_runs = {
        mode: full_run if mode == full_mode else PLACEMENT_RUN.format(mode)
        for mode in PLACEMENT_MODES
    }
    jobs = [DemoJob(full_run, task, full_config) for task in tasks]
    for run, config in (parameters, linear_probe):
        jobs += [DemoJob(run, task, config) for task in tasks]
    for mode, run in placement_runs.items():
        if run != full_run:
            jobs += [
                DemoJob(run, task, full_config, {placement_key: mode})
                for task in tasks
            ]
    jobs += [
        DemoJob(TOKENS_ONLY_RUN, task, linear_probe[1], after=full_run)
        for task in tasks
    ]
    components = list(
        zip(COMPONENTS,
            (linear_probe[0], TOKENS_ONLY_RUN, parameters[0], full_run)))
    return AblationPlan(jobs, components, list(placement_runs.items()), tasks)


def tokens_only_options(token_backbone: Dict, full_row: Dict) -> Dict:
    """Linear probing with the full TR-PTS run's token selection.

    Args:
        token_backbone (dict): The full config's backbone settings of
            :data:`TOKEN_ARGS` (``type``, ``keep_rate``, ...).
        full_row (dict): The full run's row (its ``token_blocks``).

    Returns:
        dict: ``--cfg-options`` for the linear-probing config.
    """
    if 'token_blocks' not in full_row:
        raise KeyError('the full TR-PTS row names no token_blocks: its '
                       'backbone has no token selection')
    options = {
        f'model.backbone.{key}': token_backbone[key]
        for key in TOKEN_ARGS if key in token_backbone
    }
    options['model.backbone.keep_layers'] = list(full_row['token_blocks'])
    return options


def _token_settings(full_config: str) -> Tuple[Dict, str, str]:
    """The full config's token-selection backbone settings, the key of its
    placement mode and the mode."""
    cfg = Config.fromfile(full_config)
    backbone = {
        k: cfg.model.backbone[k]
        for k in TOKEN_ARGS if k in cfg.model.backbone
    }
    for i, hook in enumerate(cfg.get('custom_hooks', [])):
        if hook.get('token_placement'):
            mode = hook.token_placement.get('mode', 'sparse')
            return backbone, f'custom_hooks.{i}.token_placement.mode', mode
    raise ValueError(f'{full_config} has no hook with a token_placement')


def format_ablation_tables(plan: AblationPlan, rows: Dict[Tuple[str, str],
                                                          Dict]) -> str:
    """The two Markdown tables of the ablation, with their titles."""
    tasks = plan.tasks

    def cells(run: str) -> Tuple[List[Dict], List[str], str]:
        runs = [rows.get((run, task), {'error': 'not run'}) for task in tasks]
        done = [r for r in runs if 'error' not in r]
        top1 = [
            f'{r["top1"]:.1f}' if 'error' not in r else 'failed' for r in runs
        ]
        mean = (f'{sum(r["top1"] for r in done) / len(done):.1f}'
                if done and len(done) == len(runs) else '-')
        return runs, top1, mean

    head = ' | '.join(tasks)
    lines = [
        '**Component ablation** (top-1 % on the test split; tokens: token '
        'selection in the blocks that full TR-PTS chose on the task)', '',
        f'| variant | tokens | parameters | {head} | mean top-1 | '
        'trainable % | GFLOPs |', '|' + '---|' * (len(tasks) + 6)
    ]
    for component, run in plan.components:
        runs, top1, mean = cells(run)
        tokens = '✓' if component in ('tokens only', 'both') else ''
        params = '✓' if component in ('parameters only', 'both') else ''
        done = [r for r in runs if 'error' not in r]
        lines.append('| ' +
                     ' | '.join([COMPONENT_LABELS[component], tokens, params] +
                                top1 + [mean] +
                                cost_cells(done, absolute=False)) + ' |')
    lines += [
        '', '**Token placement** (full TR-PTS; top-1 % and the blocks with '
        'token selection per task)', '',
        f'| placement | {head} | mean top-1 | GFLOPs |',
        '|' + '---|' * (len(tasks) + 3)
    ]
    for mode, run in plan.placements:
        runs, top1, mean = cells(run)
        task_cells = [
            f'{value} {r["token_blocks"]}' if 'token_blocks' in r else value
            for value, r in zip(top1, runs)
        ]
        done = [r for r in runs if 'error' not in r]
        lines.append('| ' + ' | '.join([mode] + task_cells + [mean] +
                                       cost_cells(done, False)[1:]) + ' |')
    return '\n'.join(lines)


def run_ablation(task_classes: Dict[str, int],
                 data_root: str,
                 work_root: str,
                 linear_probe: Tuple[str, str],
                 parameters: Tuple[str, str],
                 full: Tuple[str, str],
                 cfg_options: Optional[dict] = None,
                 quiet: bool = True,
                 workers: Optional[int] = None,
                 rerun: bool = False) -> str:
    """The component and placement ablations (``ablation.{md,json}``).

    See :func:`plan_ablation` for the runs.  ``ablation.json`` holds
    ``tasks`` and the rows of every ``component`` and ``placement``.

    Args:
        task_classes (dict): Task -> class count (table columns, in order).
        data_root (str): The generated benchmark.
        work_root (str): Parent of the runs' work dirs (the demo's: its
            finished identical runs are reused) and of the results.
        linear_probe, parameters, full (tuple): ``(run name, config)`` of
            linear probing, TR-PTS parameters and full TR-PTS (give the
            demo's row names to share its runs).
        cfg_options (dict, optional): Overrides applied to every run.
        quiet (bool): Runs in worker processes, output in their logs.
        workers (int, optional): Worker processes.
        rerun (bool): Ignore the rows of earlier identical runs.

    Returns:
        str: Both tables, Markdown.

    Raises:
        DemoFailure: after writing what finished, when a run failed.
    """
    token_backbone, placement_key, full_mode = _token_settings(full[1])
    plan = plan_ablation(
        list(task_classes), linear_probe, parameters, full, placement_key,
        full_mode)

    def resolve(job: DemoJob, full_row: Dict) -> DemoJob:
        return DemoJob(job.run, job.task, job.config,
                       tokens_only_options(token_backbone, full_row))

    rows = run_jobs(
        plan.jobs,
        task_classes,
        data_root,
        work_root,
        cfg_options,
        workers=workers,
        quiet=quiet,
        rerun=rerun,
        resolve=resolve)
    text = format_ablation_tables(plan, rows)
    data = dict(
        tasks=plan.tasks,
        component=OrderedDict(
            (name, [rows[(run, task)] for task in plan.tasks])
            for name, run in plan.components),
        placement=OrderedDict(
            (mode, [rows[(run, task)] for task in plan.tasks])
            for mode, run in plan.placements))
    write_results(work_root, 'ablation', data, text)
    failures = failures_of(rows)
    if failures:
        raise DemoFailure(text, failures)
    return text
