"""The results tool (collect_results.py) and the sweep script (sweep.py)."""
import importlib.util
import json
import os
import os.path as osp
import re

import pytest
from conftest import PYTHON, REPO, assert_ok, run_tool, write_tiny_config

from mmtrpts.datasets.fgvc_meta import FGVC_DATASETS
from mmtrpts.datasets.vtab_tasks import VTAB_GROUPS, VTAB_TASKS
from mmtrpts.results.paper import PAPER_FGVC, PAPER_VTAB
from mmtrpts.results.runs import (SWEEP_RECORD, collect_runs, read_evaluations,
                                  read_trainable, summarize)
from mmtrpts.results.tables import format_markdown, results_to_json

SWEEP = osp.join(REPO, 'tools', 'sweep.py')
COLLECT = osp.join(REPO, 'tools', 'analysis_tools', 'collect_results.py')
STAMP = '20250101_120000'
TRAINABLE_LINE = ('2025/01/01 12:00:01 - mmengine - INFO - Trainable '
                  'parameters: 294,912 / 86,567,656 (0.341% of the model); '
                  '0.344% of the backbone (85,798,656), target 0.340%\n')


def _write_run(run_dir,
               dataset,
               evals,
               max_epochs,
               stamp=STAMP,
               log='',
               iters_per_epoch=2):
    """A run dir as MMEngine writes it: train and val lines in
    ``vis_data/scalars.json``, the config in ``vis_data/config.py`` and
    the log in ``<stamp>/<stamp>.log``."""
    vis = osp.join(run_dir, stamp, 'vis_data')
    os.makedirs(vis)
    lines, step = [], 0
    for epoch, top1 in evals:
        for _ in range(iters_per_epoch):
            step += 1
            lines.append(
                dict(
                    lr=1e-3,
                    data_time=0.01,
                    loss=1.5,
                    time=0.1,
                    epoch=epoch,
                    iter=step,
                    step=step))
        lines.append({
            'accuracy/top1': top1,
            'data_time': 0.01,
            'time': 0.05,
            'step': epoch
        })
    with open(osp.join(vis, 'scalars.json'), 'w') as f:
        f.writelines(json.dumps(line) + '\n' for line in lines)
    with open(osp.join(vis, 'config.py'), 'w') as f:
        f.write(f'val_dataloader = dict(batch_size=32, dataset={dataset!r})\n'
                f'train_cfg = dict(by_epoch=True, max_epochs={max_epochs}, '
                'val_interval=1)\n')
    with open(osp.join(run_dir, stamp, f'{stamp}.log'), 'w') as f:
        f.write(log)


def _vtab(task, split='test'):
    return dict(
        type='VTAB1k',
        data_root='data/vtab-1k',
        task=task,
        split=split,
        test_mode=True)


def _fgvc(name):
    return dict(
        type='FGVC',
        data_root='data/fgvc',
        dataset=name,
        split='test',
        test_mode=True)


def _by_task(runs):
    return {run.task: run for run in runs}


def test_last_and_max_test_with_their_epochs(tmp_path):
    _write_run(
        str(tmp_path / 'dtd'),
        _vtab('dtd'), [(1, 50.0), (2, 62.5), (3, 61.25)],
        max_epochs=3,
        log=TRAINABLE_LINE)
    _write_run(
        str(tmp_path / 'tie'),
        _vtab('location'), [(10, 60.0), (20, 60.0), (30, 59.0)],
        max_epochs=30)
    runs = _by_task(collect_runs(str(tmp_path)))
    dtd = runs['dtd']
    assert (dtd.benchmark, dtd.status, dtd.eval_split) == ('vtab1k',
                                                           'complete', 'test')
    assert dtd.last == (3, 61.25) and dtd.max_test == (2, 62.5)
    assert dtd.reached_max_epochs and dtd.usable
    assert dtd.history == [(1, 50.0), (2, 62.5), (3, 61.25)]
    assert dtd.trainable == dict(
        params=294912,
        model_params=86567656,
        denominator=85798656,
        denominator_kind='backbone',
        source='log',
        percent=100 * 294912 / 85798656)
    # a task outside VTAB/FGVC; ties go to the earliest epoch
    other = runs['location']
    assert other.benchmark == 'other' and other.max_test == (10, 60.0)
    assert other.trainable is None
    table = format_markdown(collect_runs(str(tmp_path)), papers=['trpts'])
    assert ('| dtd | 61.25 (ep 3/3) | 62.50 (ep 2) | 294,912 (0.34%) | '
            'complete | - |') in table
    assert '| location | 59.00 (ep 30/30) | 60.00 (ep 10) | - | complete |' \
        in table


def test_evaluation_lines_only(tmp_path):
    path = str(tmp_path / 'scalars.json')
    with open(path, 'w') as f:
        f.write('{"lr": 0.1, "loss": 2.0, "epoch": 1, "iter": 1, "step": 1}\n'
                '{"accuracy/top1": 12.5, "time": 0.1, "step": 1}\n'
                '{"accuracy/top1": 25.0, "accuracy/top5": 70.0, "step": 2}\n'
                '{"accuracy/to')  # a line still being written
    assert read_evaluations(path) == [(1, 12.5), (2, 25.0)]
    assert read_evaluations(path, 'accuracy/top5') == [(2, 70.0)]


def test_resumed_run_joins_its_timestamp_folders(tmp_path):
    run_dir = str(tmp_path / 'cub')
    _write_run(
        run_dir,
        _fgvc('CUB_200_2011'), [(1, 70.0), (2, 80.0), (3, 75.0)],
        max_epochs=4,
        stamp='20250101_100000')
    _write_run(
        run_dir,
        _fgvc('cub'), [(3, 76.0), (4, 77.0)],
        max_epochs=4,
        stamp='20250101_110000',
        log='... - INFO - resumed epoch: 2, iter: 40\n')
    run = collect_runs(str(tmp_path))[0]
    assert (run.benchmark, run.task, run.status) == ('fgvc', 'cub', 'complete')
    # epoch 3 of the first attempt was redone after the resume
    assert run.history == [(1, 70.0), (2, 80.0), (3, 76.0), (4, 77.0)]
    assert run.max_test == (2, 80.0) and run.last == (4, 77.0)
    assert any('resumed at epoch 2' in note for note in run.notes)


def test_trainable_from_selection_record_without_log(tmp_path):
    run_dir = str(tmp_path / 'eurosat')
    _write_run(run_dir, _vtab('eurosat'), [(1, 90.0)], max_epochs=1)
    os.makedirs(osp.join(run_dir, 'selection'))
    with open(osp.join(run_dir, 'selection', 'selection.json'), 'w') as f:
        json.dump(
            dict(
                budget=dict(
                    trainable=300,
                    denominator=100000,
                    denominator_kind='backbone')), f)
    run = collect_runs(str(tmp_path))[0]
    assert run.trainable['source'] == 'selection'
    assert run.trainable['percent'] == pytest.approx(0.3)
    # a budget without denominator: the share is of the model
    assert read_trainable('... - INFO - Trainable parameters: 1,500 / '
                          '150,000 (1.000% of the model)\n') == dict(
                              params=1500,
                              model_params=150000,
                              denominator=150000,
                              denominator_kind='model')


def _full_vtab(root, last, best, skip=()):
    """One complete 2-epoch run per VTAB task (token-named run dirs)."""
    for task, info in VTAB_TASKS.items():
        if task not in skip:
            _write_run(
                osp.join(root, info.token),
                _vtab(info.token), [(1, best[task]), (2, last[task])],
                max_epochs=2,
                log=TRAINABLE_LINE)


def test_vtab_group_means_exact(tmp_path):
    last = {task: float(i) for i, task in enumerate(VTAB_TASKS)}
    best = {task: float(i) + 0.5 for i, task in enumerate(VTAB_TASKS)}
    _full_vtab(str(tmp_path), last, best)
    runs = collect_runs(str(tmp_path))
    assert len(runs) == 19 and all(r.usable for r in runs)
    summary = summarize(runs)['vtab1k']
    # tasks 0-6 natural, 7-10 specialized, 11-18 structured
    assert [summary[g]['last'] for g in VTAB_GROUPS] == [3.0, 8.5, 14.5]
    assert [summary[g]['max_test'] for g in VTAB_GROUPS] == [3.5, 9.0, 15.0]
    assert summary['mean19']['last'] == 9.0
    assert summary['mean19']['max_test'] == 9.5
    assert summary['group_mean']['last'] == (3.0 + 8.5 + 14.5) / 3
    assert summary['group_mean']['max_test'] == (3.5 + 9.0 + 15.0) / 3
    assert summary['mean19']['trainable_percent'] == pytest.approx(
        100 * 294912 / 85798656)
    assert all(not entry['missing'] for entry in summary.values())


@pytest.mark.parametrize('method', ['full', 'linear', 'gps'])
def test_paper_per_task_values_give_the_printed_means(tmp_path, method):
    """V-PETL rows: our aggregation of the paper's per-task values
    reproduces docs/benchmarks.md's means to their last printed digit."""
    paper = PAPER_VTAB[method]
    _full_vtab(str(tmp_path / 'vtab'), paper.per_task, paper.per_task)
    fgvc = PAPER_FGVC[method]
    for name, top1 in fgvc.per_task.items():
        _write_run(
            str(tmp_path / 'fgvc' / name),
            _fgvc(name), [(1, top1)],
            max_epochs=1)
    vtab = summarize(collect_runs(str(tmp_path / 'vtab')))['vtab1k']
    for key, printed in paper.means.items():
        assert vtab[key]['last'] == pytest.approx(printed, abs=0.0051), key
    mean = summarize(collect_runs(str(tmp_path / 'fgvc')))['fgvc']['mean']
    assert mean['max_test'] == pytest.approx(fgvc.means['mean'], abs=0.0051)


def test_missing_tasks_and_incomplete_runs_are_reported(tmp_path):
    values = {task: 50.0 for task in VTAB_TASKS}
    _full_vtab(str(tmp_path), values, values, skip=('cifar', 'kitti'))
    _write_run(
        str(tmp_path / 'kitti'), _vtab('kitti'), [(1, 70.0)], max_epochs=100)
    summary = summarize(collect_runs(str(tmp_path)))['vtab1k']
    assert summary['natural']['missing'] == {'cifar': 'no run'}
    assert summary['natural']['last'] is None
    assert summary['specialized']['last'] == 50.0
    assert summary['structured']['missing'] == {
        'kitti': 'incomplete: epoch 1/100'
    }
    assert summary['mean19']['last'] is None
    assert len(summary['mean19']['missing']) == 2
    table = format_markdown(collect_runs(str(tmp_path)))
    assert '| **Natural** | n/a (1 missing) | n/a (1 missing) |' in table
    assert '| **Specialized** | 50.00 | 50.00 | 0.34% |' in table
    assert '| **19-task mean** | n/a (2 missing) |' in table
    assert ('Left out of the VTAB-1k means: cifar (no run); kitti '
            '(incomplete: epoch 1/100).') in table
    assert '| cifar | - | - | - | no run | - | 81.1 | 68.9 |' in table
    assert '| kitti | 70.00 (ep 1/100) |' in table


def test_failed_and_unevaluated_runs_are_listed(tmp_path):
    for name in FGVC_DATASETS:
        _write_run(
            str(tmp_path / name), _fgvc(name), [(1, 80.0)], max_epochs=1)
    # failed before the runner wrote anything: only the sweep's record
    os.makedirs(str(tmp_path / 'dogs-bad'))
    failed = dict(
        benchmark='fgvc',
        task='dogs',
        returncode=1,
        command=['python', 'tools/train.py'])
    with open(str(tmp_path / 'dogs-bad' / SWEEP_RECORD), 'w') as f:
        json.dump(failed, f)
    # started, no evaluation yet, on val200 (a hyper-parameter run)
    _write_run(str(tmp_path / 'hp'), _vtab('dtd', 'val200'), [], 100)
    runs = _by_task(collect_runs(str(tmp_path)))
    assert runs['dtd'].status == 'no evaluation yet'
    assert runs['dtd'].eval_split == 'val200'
    mean = summarize(collect_runs(str(tmp_path)))['fgvc']['mean']
    assert mean['last'] is None
    assert mean['missing'] == {'dogs': '2 runs: dogs, dogs-bad'}
    table = format_markdown(collect_runs(str(tmp_path)))
    assert '| dogs | - | - | - | failed |' in table
    assert '| dtd | - | - | - | no evaluation yet |' in table
    assert '`dogs-bad`: exit code 1.' in table
    report = results_to_json(collect_runs(str(tmp_path)), ['trpts'])
    json.dumps(report)
    group = report['groups'][tmp_path.name]
    statuses = {r['run_dir']: r['status'] for r in group['runs']}
    assert statuses['dogs-bad'] == 'failed' and statuses['cub'] == 'complete'
    assert report['paper']['fgvc']['trpts']['means']['mean'] == 91.94


def test_sweep_dry_run_commands(tmp_path):
    configs = tmp_path / 'configs'
    configs.mkdir()
    for token in ('cifar100', 'clevr-count'):
        (configs / f'vit-b_vtab1k-{token}.py').write_text('')
    work = str(tmp_path / 'work')
    common = [
        PYTHON, SWEEP, '--benchmark', 'vtab1k', '--tasks', 'cifar',
        'clevr_count', '--config-dir',
        str(configs), '--work-root', work, '--dry-run', '--cfg-options',
        'train_cfg.max_epochs=1'
    ]
    proc = run_tool(common +
                    ['--launcher', 'slurm', '--partition', 'p', '--gpus', '4'])
    assert_ok(proc)
    lines = proc.stdout.strip().splitlines()
    assert [line.split() for line in lines] == [[
        f'PYTHON={PYTHON}', 'GPUS=4', 'GPUS_PER_NODE=4', 'bash',
        osp.join(REPO, 'tools', 'slurm_train.sh'), 'p', f'trpts-{token}',
        str(configs / f'vit-b_vtab1k-{token}.py'),
        osp.join(work, token), '--cfg-options', 'train_cfg.max_epochs=1'
    ] for token in ('cifar100', 'clevr-count')]
    assert not osp.exists(work)


def test_sweep_command_per_launcher():
    spec = importlib.util.spec_from_file_location('sweep', SWEEP)
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    tasks = sweep.resolve_tasks('mini-vtab', ['location'])
    job, = sweep.benchmark_jobs('mini-vtab', 'trpts-param', tasks)
    assert job.config == osp.join(REPO, 'configs', 'embedded',
                                  'vit-tiny_trpts-param_mini-vtab.py')
    assert 'val_dataloader.dataset.task=location' in job.options
    assert 'model.head.num_classes=8' in job.options
    env, command = sweep.train_command(job, 'w', ['a=1'], 'none', 1)
    assert env == {} and command[1:4] == [
        osp.join(REPO, 'tools', 'train.py'), job.config, '--work-dir'
    ]
    assert command[-3:] == [
        'model.head.num_classes=8', 'data_preprocessor.num_classes=8', 'a=1'
    ]
    for launcher, gpus in (('none', 2), ('pytorch', 1)):
        _, command = sweep.train_command(job, 'w', [], launcher, gpus)
        assert command[:4] == [
            'bash',
            osp.join(REPO, 'tools', 'dist_train.sh'), job.config,
            str(gpus)
        ]
    assert list(sweep.resolve_tasks(
        'vtab1k', ['cifar100', 'kitti_dist'])) == ['cifar', 'kitti']
    assert list(sweep.resolve_tasks('fgvc', None)) == list(FGVC_DATASETS)
    with pytest.raises(ValueError, match='Unknown mini-vtab task'):
        sweep.resolve_tasks('mini-vtab', ['cifar'])


def test_sweep_then_collect_end_to_end(tmp_path, mini_vtab):
    """Sweep the generated tasks (1 of them failing), then collect."""
    configs = tmp_path / 'configs'
    configs.mkdir()
    write_tiny_config(
        str(configs / 'vit-tiny_tiny_mini-vtab.py'),
        mini_vtab,
        base='vit-tiny_trpts-param_mini-vtab.py',
        max_epochs=2,
        extra="""
custom_hooks = [dict(type='FisherSelectionHook', target_ratio=0.2,
                     batch_size=16, progress=False, save_plot=False)]
default_hooks = dict(logger=dict(interval=50),
                     checkpoint=dict(interval=100))
""")
    work = str(tmp_path / 'work')
    proc = run_tool([
        PYTHON, SWEEP, '--benchmark', 'mini-vtab', '--method', 'tiny',
        '--config-dir',
        str(configs), '--tasks', 'texture', 'location', 'counting',
        '--work-root', work
    ])
    # `counting` is not generated in the fixture: it fails, the others run
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert '2/3 runs succeeded' in proc.stdout
    assert 'Failed: counting (exit 1)' in proc.stdout

    out, js = str(tmp_path / 'results.md'), str(tmp_path / 'results.json')
    collect = run_tool([PYTHON, COLLECT, work, '--out', out, '--json', js])
    assert_ok(collect)
    with open(out) as f:
        assert f.read() == collect.stdout
    with open(js) as f:
        runs = {r['task']: r for r in json.load(f)['groups']['work']['runs']}
    assert runs['counting']['status'] == 'failed'
    for task in ('texture', 'location'):
        stamp = next(
            d for d in os.listdir(osp.join(work, task))
            if re.match(r'\d{8}_\d{6}$', d))
        evals = read_evaluations(
            osp.join(work, task, stamp, 'vis_data', 'scalars.json'))
        assert [e for e, _ in evals] == [1, 2]
        best = max(evals, key=lambda e: (e[1], -e[0]))
        run = runs[task]
        assert run['status'] == 'complete'
        assert run['last'] == dict(epoch=2, top1=evals[-1][1])
        assert run['max_test'] == dict(epoch=best[0], top1=best[1])
        assert run['trainable']['source'] == 'log'
        percent = run['trainable']['percent']
        assert percent == pytest.approx(20, abs=1)
        assert (f'| {task} | {evals[-1][1]:.2f} (ep 2/2) | {best[1]:.2f} '
                f'(ep {best[0]}) | {run["trainable"]["params"]:,} '
                f'({percent:.2f}%) | complete |') in collect.stdout
    assert '| counting | - | - | - | failed |' in collect.stdout
