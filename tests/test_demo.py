"""The demo's worker pool, log routing, failures, results cache and
ablation plan; and the warnings its runs no longer print."""
import contextlib
import io
import itertools
import json
import logging
import os
import os.path as osp
import subprocess
import tempfile

import pytest
import torch
from conftest import (PYTHON, REPO, assert_ok, write_backbone_checkpoint,
                      write_tiny_config)
from mmengine.logging import MMLogger
from mmengine.runner.checkpoint import load_state_dict
from mmpretrain.registry import MODELS
from test_spt import VIT, _plan, _shapes
from test_spt_allocation import allocate_planted

from mmtrpts.apis import demo_ablation, demo_runs
from mmtrpts.apis.demo import run_methods
from mmtrpts.apis.demo_ablation import (format_ablation_tables, plan_ablation,
                                        tokens_only_options)
from mmtrpts.apis.demo_runs import DemoFailure, DemoJob, run_jobs

TASKS = {'texture': 6, 'location': 8}  # the `mini_vtab` fixture's
TRPTS = osp.join(REPO, 'configs', 'embedded', 'vit-tiny_trpts_mini-vtab.py')
WARNING_HOOK = '''
import warnings

from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS


@HOOKS.register_module()
class DemoTestWarningHook(Hook):

    def before_train(self, runner):
        warnings.warn('demo-test-warning from inside the run')
'''
_IDS = itertools.count()


@contextlib.contextmanager
def _fds_to(path: str):
    """This process's (and its children's) fds 1 and 2 into ``path``."""
    saved = os.dup(1), os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    try:
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for descriptor in (fd, *saved):
            os.close(descriptor)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


@pytest.fixture(scope='module')
def configs(mini_vtab, tmp_path_factory) -> dict:
    """Tiny configs: one that runs, one that warns inside the run, one that
    fails after the runner is built."""
    folder = tmp_path_factory.mktemp('demo-configs')
    with open(folder / 'demo_warning_hook.py', 'w') as f:
        f.write(WARNING_HOOK)
    extra = {
        'ok':
        '',
        'warn':
        "custom_imports = dict(imports=['mmtrpts', "
        "'demo_warning_hook'], allow_failed_imports=False)\n"
        "custom_hooks = [dict(type='DemoTestWarningHook')]",
        'bad':
        "optim_wrapper = dict(optimizer=dict(type='NoSuchOptimizer'))",
    }
    return dict(
        folder=str(folder),
        **{
            name:
            write_tiny_config(
                str(folder / f'{name}.py'), mini_vtab, extra=text)
            for name, text in extra.items()
        })


@pytest.fixture(scope='module')
def pool_run(configs, mini_vtab, tmp_path_factory):
    """``run_methods`` with 2 workers on 3 methods x 2 tasks, one method
    failing: the console lines, the fds' output, the raised failure."""
    work_root = str(tmp_path_factory.mktemp('demo-pool'))
    fds = osp.join(work_root, 'fds.txt')
    console = io.StringIO()
    methods = {name: configs[name] for name in ('ok', 'warn', 'bad')}
    with pytest.MonkeyPatch.context() as mp:
        # The spawned workers import the warning hook from here.
        mp.syspath_prepend(configs['folder'])
        with _fds_to(fds), contextlib.redirect_stdout(console):
            with pytest.raises(DemoFailure) as failure:
                run_methods(methods, TASKS, mini_vtab, work_root, workers=2)
    return dict(
        work_root=work_root,
        console=console.getvalue(),
        fds=_read(fds),
        failure=failure.value)


def test_failed_runs_keep_the_others_rows(pool_run):
    failure, work_root = pool_run['failure'], pool_run['work_root']
    assert [(f['run'], f['task'])
            for f in failure.failures] == [('bad', 'texture'),
                                           ('bad', 'location')]
    for f in failure.failures:
        # mmengine's registry fails on the unknown optimizer type.
        assert f['error'].startswith('TypeError: ')
        assert f['log'] == osp.join(work_root, 'bad', f['task'], 'run.log')
        log = _read(f['log'])
        assert 'NoSuchOptimizer' in log and 'Traceback' in log
    with open(osp.join(work_root, 'results.json')) as f:
        results = json.load(f)
    assert list(results) == ['ok', 'warn', 'bad']  # requested order
    for method in ('ok', 'warn'):
        assert [r['task'] for r in results[method]] == list(TASKS)
        for row in results[method]:
            assert 0 <= row['top1'] <= 100 and row['seconds'] > 0
            assert row['threads'] == 1
    assert all('error' in row for row in results['bad'])
    table = _read(osp.join(work_root, 'results.md')).splitlines()
    assert table == failure.table.splitlines()
    assert table[0].startswith('| method | texture | location |')
    assert table[4].startswith('| bad | failed | failed | - | - |')
    assert 'bad/texture/run.log' in str(failure)


def test_console_gets_one_line_per_run_and_run_logs_the_rest(pool_run):
    lines = pool_run['console'].splitlines()
    assert len(lines) == 6
    assert sorted(line[:5]
                  for line in lines) == [f'[{i}/6]' for i in range(1, 7)]
    finished = [line for line in lines if 'top-1' in line]
    assert len(finished) == 4
    for line in finished:
        assert line.split('|')[0].split()[1] in ('ok', 'warn')
        assert 'log: ' in line and line.rstrip().endswith('run.log')
    assert sum('FAILED' in line for line in lines) == 2
    # Nothing of the runs reached the terminal's file descriptors.
    for text in ('Epoch(train)', 'demo-test-warning', 'Traceback'):
        assert text not in pool_run['fds']
    for task in TASKS:
        log = _read(osp.join(pool_run['work_root'], 'warn', task, 'run.log'))
        assert 'Epoch(train)' in log and 'INFO' in log
        # Both runs of a worker show the warning: each log is complete.
        assert 'demo-test-warning from inside the run' in log
        # mmengine's CheckpointHook builds a FileClient: host-stack noise.
        assert 'FileClient' not in log and 'HardDiskBackend' not in log


def test_results_do_not_depend_on_the_worker_count(pool_run, configs,
                                                   mini_vtab, tmp_path):
    with contextlib.redirect_stdout(io.StringIO()):
        run_methods({'ok': configs['ok']},
                    TASKS,
                    mini_vtab,
                    str(tmp_path),
                    workers=1)
    with open(tmp_path / 'results.json') as f:
        one = json.load(f)['ok']
    with open(osp.join(pool_run['work_root'], 'results.json')) as f:
        two = json.load(f)['ok']
    assert [r['top1'] for r in one] == [r['top1'] for r in two]
    assert [r['trainable'] for r in one] == [r['trainable'] for r in two]


def test_an_identical_run_reuses_the_finished_row(pool_run, configs,
                                                  mini_vtab):
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        table = run_methods({'ok': configs['ok']}, TASKS, mini_vtab,
                            pool_run['work_root'])
    lines = console.getvalue().splitlines()
    assert len(lines) == 2 and all('(cached, ' in line for line in lines)
    assert table.splitlines()[2] == pool_run['failure'].table.splitlines()[2]


def _fake_run(calls):

    def run(spec):
        calls.append((spec['work_dir'], spec['options']))
        if 'fail' in spec['options']:
            return dict(
                task=spec['task'],
                error='ValueError: planted',
                log=None,
                seconds=0.,
                threads=1)
        return dict(
            task=spec['task'],
            top1=50.,
            trainable=1,
            total=2,
            flops=1e9,
            seconds=0.,
            threads=1,
            token_blocks=[0])

    return run


def test_jobs_wait_for_the_run_they_need(monkeypatch, configs, mini_vtab,
                                         tmp_path):
    calls = []
    monkeypatch.setattr(demo_runs, '_run_inline', _fake_run(calls))
    ok = configs['ok']
    jobs = [
        DemoJob('after', 'texture', ok, after='first'),
        DemoJob('first', 'texture', ok),
        DemoJob('first', 'texture', ok),  # the same run: once
        DemoJob('broken', 'location', ok, {'fail': 1}),
        DemoJob('orphan', 'location', ok, after='broken'),
    ]
    seen = []

    def resolve(job, row):
        seen.append(row['token_blocks'])
        return DemoJob(job.run, job.task, job.config, {'from': 'first'})

    lines = []
    rows = run_jobs(
        jobs,
        TASKS,
        mini_vtab,
        str(tmp_path),
        quiet=False,
        resolve=resolve,
        echo=lines.append)
    assert list(rows) == [('after', 'texture'), ('first', 'texture'),
                          ('broken', 'location'), ('orphan', 'location')]
    assert [osp.relpath(c[0], tmp_path) for c in calls
            ] == ['first/texture', 'broken/location', 'after/texture']
    assert calls[-1][1] == {'from': 'first'} and seen == [[0]]
    assert 'broken' in rows[('orphan', 'location')]['error']
    assert len(lines) == 4 and lines[-1].startswith('[4/4]')
    with pytest.raises(ValueError, match='not among the jobs'):
        run_jobs(jobs[:1], TASKS, mini_vtab, str(tmp_path), quiet=False)


def test_ablation_plan():
    plan = plan_ablation(['location', 'counting'], ('linear probing', 'lp.py'),
                         ('TR-PTS (parameters)', 'param.py'),
                         ('TR-PTS (params + tokens)', 'full.py'),
                         'custom_hooks.0.token_placement.mode', 'sparse')
    full = 'TR-PTS (params + tokens)'
    assert plan.components == [('neither', 'linear probing'),
                               ('tokens only', 'ablation tokens only'),
                               ('parameters only', 'TR-PTS (parameters)'),
                               ('both', full)]
    assert plan.placements == [('dense', 'ablation placement dense'),
                               ('random', 'ablation placement random'),
                               ('sparse', full)]
    by_key = {job.key: job for job in plan.jobs}
    assert len(by_key) == len(plan.jobs) == 12
    assert [job.run for job in plan.jobs[:2]] == [full, full]
    for task in ('location', 'counting'):
        assert by_key[(full, task)].config == 'full.py'
        assert by_key[('linear probing', task)].config == 'lp.py'
        assert by_key[('TR-PTS (parameters)', task)].config == 'param.py'
        tokens = by_key[('ablation tokens only', task)]
        assert (tokens.config, tokens.after) == ('lp.py', full)
        for mode in ('dense', 'random'):
            job = by_key[(f'ablation placement {mode}', task)]
            assert job.config == 'full.py' and job.options == {
                'custom_hooks.0.token_placement.mode': mode
            }
    assert plan.jobs.index(by_key[(full, 'counting')]) < plan.jobs.index(
        by_key[('ablation tokens only', 'location')])


def test_tokens_only_copies_the_full_runs_token_selection():
    backbone, key, mode = demo_ablation._token_settings(TRPTS)
    assert (key, mode) == ('custom_hooks.0.token_placement.mode', 'sparse')
    assert tokens_only_options(backbone, dict(token_blocks=[1, 2, 4])) == {
        'model.backbone.type': 'TokenKeepFuseViT',
        'model.backbone.keep_rate': 0.95,
        'model.backbone.keep_round': 'floor',
        'model.backbone.fuse': 'norm',
        'model.backbone.keep_layers': [1, 2, 4],
    }
    with pytest.raises(KeyError, match='token_blocks'):
        tokens_only_options(backbone, dict(top1=1.))


def test_ablation_tables():
    plan = plan_ablation(['a', 'b'], ('lp', 'lp.py'), ('param', 'p.py'),
                         ('full', 'f.py'))

    def row(top1, trainable, flops, blocks=None):
        out = dict(top1=top1, trainable=trainable, total=100, flops=flops)
        return out if blocks is None else dict(out, token_blocks=blocks)

    rows = {}
    for task, shift in (('a', 0), ('b', 10)):
        rows[('lp', task)] = row(10 + shift, 1, 2e9)
        rows[('ablation tokens only', task)] = row(12 + shift, 1, 1e9, [3])
        rows[('param', task)] = row(30 + shift, 5, 2e9)
        rows[('full', task)] = row(32 + shift, 5, 1e9, [1, 2])
        rows[('ablation placement dense', task)] = row(20, 5, 1e9, [0, 5])
    rows[('ablation placement random', 'a')] = dict(error='boom')
    rows[('ablation placement random', 'b')] = row(21, 5, 1e9, [2, 3])
    lines = format_ablation_tables(plan, rows).splitlines()
    assert lines[2:8] == [
        '| variant | tokens | parameters | a | b | mean top-1 | '
        'trainable % | GFLOPs |',
        '|---|---|---|---|---|---|---|---|',
        '| neither (linear probing) |  |  | 10.0 | 20.0 | 15.0 | 1.00 | 2.0000 |',
        '| tokens only | ✓ |  | 12.0 | 22.0 | 17.0 | 1.00 | 1.0000 |',
        '| parameters only (TR-PTS parameters) |  | ✓ | 30.0 | 40.0 | 35.0 | 5.00 | 2.0000 |',
        '| both (full TR-PTS) | ✓ | ✓ | 32.0 | 42.0 | 37.0 | 5.00 | 1.0000 |',
    ]
    assert lines[-4:] == [
        '|---|---|---|---|---|',
        '| dense | 20.0 [0, 5] | 20.0 [0, 5] | 20.0 | 1.0000 |',
        '| random | failed | 21.0 [2, 3] | - | 1.0000 |',
        '| sparse | 32.0 [1, 2] | 42.0 [1, 2] | 37.0 | 1.0000 |',
    ]


# -- the warnings fixed at their source -------------------------------------
@contextlib.contextmanager
def _log_records():
    """Records of a fresh current MMLogger (``print_log('current')``)."""
    logger = MMLogger.get_instance(f'test_demo_{next(_IDS)}', log_level='INFO')
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


@pytest.fixture(scope='module')
def plain_vit(tmp_path_factory) -> str:
    """A backbone-only checkpoint of the tiny plain ViT (``backbone.``)."""
    return write_backbone_checkpoint(
        str(tmp_path_factory.mktemp('plain') / 'vit.pth'), **VIT)


def _without(path: str, *keys: str) -> str:
    checkpoint = torch.load(path, weights_only=True)
    for key in keys:
        checkpoint['state_dict'].pop(key)
    out = osp.join(tempfile.mkdtemp(), 'vit.pth')
    torch.save(checkpoint, out)
    return out


def test_keep_layer_mask_may_be_absent_and_is_restored_when_present(plain_vit):
    state = {
        k[len('backbone.'):]: v
        for k, v in torch.load(plain_vit, weights_only=True)
        ['state_dict'].items()
    }
    backbone = MODELS.build(
        dict(type='TokenKeepFuseViT', keep_layers=[1], **VIT))
    backbone.load_state_dict(state, strict=True)  # no keep_layer_mask
    assert backbone.keep_layers == [1]  # the configured blocks stay
    with _log_records() as records:
        load_state_dict(backbone, state, strict=False, logger='current')
    assert records == []
    saved = dict(state, keep_layer_mask=torch.tensor([True, False]))
    backbone.load_state_dict(saved, strict=True)
    assert backbone.keep_layers == [0]


@pytest.fixture(scope='module')
def spt_allocation(tmp_path_factory) -> str:
    plan = _plan(
        _shapes(**VIT),
        'lora',
        structured=['layers.0.attn.proj.weight'],
        unstructured={'layers.1.ln2.weight': 3},
        full=[])
    allocation, _ = allocate_planted(
        _shapes(**VIT), plan, 'lora', cls_token=32)
    path = str(tmp_path_factory.mktemp('spt') / 'lora.pth')
    torch.save(allocation, path)
    return path


def _method_backbone(kind: str, checkpoint: str, spt_allocation: str):
    extra = dict(
        rlrr=dict(type='RLRRViT', rlrr_init='identity'),
        sparse_tuning=dict(
            type='SparseTuningViT',
            keep_layers=(1, ),
            adapter_cfg=dict(hidden_dims=8, inner_dims=4)),
        spt=dict(type='SPTViT', sensitivity_file=spt_allocation),
    )[kind]
    return MODELS.build(
        dict(
            **VIT,
            **extra,
            init_cfg=dict(
                type='Pretrained', checkpoint=checkpoint, prefix='backbone.')))


@pytest.mark.parametrize('kind', ['rlrr', 'sparse_tuning', 'spt'])
def test_a_plain_checkpoint_lacks_the_methods_tensors_quietly(
        kind, plain_vit, spt_allocation):
    backbone = _method_backbone(kind, plain_vit, spt_allocation)
    method_keys = backbone.method_state_keys()
    assert method_keys and 'keep_layer_mask' not in method_keys
    with _log_records() as records:
        backbone.init_weights()
    assert [r for r in records if r.levelno >= logging.WARNING] == []
    said = [r.getMessage() for r in records if 'holds none' in r.getMessage()]
    assert len(said) == 1
    assert f'holds none of the {len(method_keys)} tensors' in said[0]
    assert plain_vit in said[0]

    # A backbone tensor the checkpoint lacks is still a WARNING, alone.
    broken = _without(plain_vit, 'backbone.layers.0.ln1.weight')
    backbone = _method_backbone(kind, broken, spt_allocation)
    with _log_records() as records:
        backbone.init_weights()
    warned = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and 'layers.0.ln1.weight' in warned[0]
    assert not any(key in warned[0] for key in method_keys)


def test_some_of_the_methods_tensors_missing_are_reported(
        plain_vit, spt_allocation, tmp_path):
    backbone = _method_backbone('sparse_tuning', plain_vit, spt_allocation)
    state = torch.load(plain_vit, weights_only=True)
    adapters = sorted(backbone.method_state_keys())
    state['state_dict'][f'backbone.{adapters[0]}'] = \
        backbone.state_dict()[adapters[0]]
    path = str(tmp_path / 'partial.pth')
    torch.save(state, path)
    backbone = _method_backbone('sparse_tuning', path, spt_allocation)
    with _log_records() as records:
        backbone.init_weights()
    warned = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and adapters[1] in warned[0]


def test_host_stack_noise_filter():
    noise = demo_runs._HostStackNoise()

    def record(message):
        return logging.LogRecord('x', logging.WARNING, '', 0, message, None,
                                 None)

    assert not noise.filter(
        record('"FileClient" will be deprecated in future. Please use io ...'))
    assert not noise.filter(
        record('backbone.pos_embed is skipped since its requires_grad=False'))
    assert noise.filter(
        record('The model and loaded state dict do not '
               'match exactly'))


def test_demo_help_shows_no_import_warning():
    env = dict(os.environ, PYTHONWARNINGS='default')
    proc = subprocess.run(
        [PYTHON, osp.join(REPO, 'tools', 'demo.py'), '--help'],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120)
    assert_ok(proc)
    assert 'MultiScaleDeformableAttention' not in proc.stderr
    for option in ('--ablation', '--workers', '--rerun', '--verbose'):
        assert option in proc.stdout


def test_run_token_faithfulness_scores_every_test_image(tiny_run, tmp_path):
    """The demo's faithfulness pass: a finished run's dumped config and
    last checkpoint, every test image of a generated task, its masks."""
    from mmtrpts.apis.demo import run_token_faithfulness
    from mmtrpts.datasets.synthetic.mini_vtab import write_task

    task_dir = write_task(
        str(tmp_path / 'data'), 'location',
        sizes=dict(train800=8, val200=8, test=6))
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    config, checkpoint = tiny_run['select']
    with open(config) as f:
        (run_dir / 'config.py').write_text(f.read())
    (run_dir / 'last_checkpoint').write_text(checkpoint)
    out = str(tmp_path / 'tokens.png')
    share = run_token_faithfulness(str(run_dir), task_dir, out, num_drawn=2)
    assert share.num_images == 6 and share.num_fused > 0
    assert 0 < share.object_area < 1 and osp.isfile(out)
    assert share == run_token_faithfulness(str(run_dir), task_dir)
    (run_dir / 'other.py').write_text('')
    with pytest.raises(FileNotFoundError, match='exactly one dumped config'):
        run_token_faithfulness(str(run_dir), task_dir)
