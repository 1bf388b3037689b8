"""End-to-end runs of tools/train.py, tools/test.py and dist_train.sh;
tools/sweep.py's config lookup per method."""
import importlib.util
import json
import os.path as osp
import re

import torch
from conftest import PYTHON, REPO, assert_ok, run_tool, write_tiny_config

TRAIN = osp.join(REPO, 'tools', 'train.py')
TEST = osp.join(REPO, 'tools', 'test.py')
DIST_TRAIN = osp.join(REPO, 'tools', 'dist_train.sh')
SWEEP = osp.join(REPO, 'tools', 'sweep.py')

# Saves every rank's final weights, so the test can compare them.
DUMP_HOOK = '''
import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS
from mmpretrain.utils import get_ori_model


@HOOKS.register_module()
class DumpRankWeightsHook(Hook):

    def after_train(self, runner):
        state = get_ori_model(runner.model).state_dict()
        torch.save(state, f'{runner.work_dir}/rank{get_rank()}.pth')
'''


def _epochs_trained(log_text):
    return sorted({int(m) for m in re.findall(r'Epoch\(train\)\s+\[(\d+)\]',
                                              log_text)})


def test_train_then_resume_continues_from_saved_epoch(tmp_path, mini_vtab):
    config = write_tiny_config(str(tmp_path / 'cfg.py'), mini_vtab,
                               max_epochs=2)
    work = str(tmp_path / 'work')
    first = run_tool([PYTHON, TRAIN, config, '--work-dir', work])
    assert_ok(first)
    assert _epochs_trained(first.stdout + first.stderr) == [1, 2]
    checkpoint = torch.load(osp.join(work, 'epoch_2.pth'), weights_only=False)
    assert checkpoint['meta']['epoch'] == 2

    second = run_tool([
        PYTHON, TRAIN, config, '--work-dir', work, '--resume',
        '--cfg-options', 'train_cfg.max_epochs=3'
    ])
    assert_ok(second)
    log = second.stdout + second.stderr
    assert 'resumed epoch: 2' in log
    assert _epochs_trained(log) == [3]
    final = torch.load(osp.join(work, 'epoch_3.pth'), weights_only=False)
    assert final['meta']['epoch'] == 3
    assert final['meta']['iter'] == 3 * checkpoint['meta']['iter'] // 2


def test_resume_from_explicit_checkpoint_path(tmp_path, mini_vtab):
    config = write_tiny_config(str(tmp_path / 'cfg.py'), mini_vtab,
                               max_epochs=2)
    work = str(tmp_path / 'work')
    assert_ok(run_tool([PYTHON, TRAIN, config, '--work-dir', work]))
    proc = run_tool([
        PYTHON, TRAIN, config, '--work-dir',
        str(tmp_path / 'other'), '--resume',
        osp.join(work, 'epoch_1.pth'), '--no-validate'
    ])
    assert_ok(proc)
    assert 'resumed epoch: 1' in proc.stdout + proc.stderr
    assert _epochs_trained(proc.stdout + proc.stderr) == [2]


def test_test_tool_writes_metrics(tmp_path, mini_vtab):
    config = write_tiny_config(str(tmp_path / 'cfg.py'), mini_vtab,
                               max_epochs=2)
    work = str(tmp_path / 'work')
    assert_ok(run_tool([PYTHON, TRAIN, config, '--work-dir', work]))
    out = str(tmp_path / 'metrics.json')
    proc = run_tool([
        PYTHON, TEST, config,
        osp.join(work, 'epoch_2.pth'), '--work-dir', work, '--out', out
    ])
    assert_ok(proc)
    with open(out) as f:
        metrics = json.load(f)
    assert 0.0 <= metrics['accuracy/top1'] <= 100.0


def test_head_class_count_mismatch_is_a_clear_error(tmp_path, mini_vtab):
    config = write_tiny_config(str(tmp_path / 'cfg.py'), mini_vtab,
                               head_classes=5)
    proc = run_tool([PYTHON, TRAIN, config, '--work-dir',
                     str(tmp_path / 'w')])
    assert proc.returncode != 0
    assert re.search(r"VTAB1k\(ann_file='.*texture/train800val200\.txt'\) "
                     r'has 6 classes but model\.head\.num_classes is 5',
                     proc.stderr)


def test_dist_train_two_cpu_ranks_end_with_identical_weights(
        tmp_path, mini_vtab):
    (tmp_path / 'dump_rank_hook.py').write_text(DUMP_HOOK)
    config = write_tiny_config(
        str(tmp_path / 'cfg.py'), mini_vtab,
        extra="custom_imports = dict(imports=['mmtrpts', 'dump_rank_hook'], "
        'allow_failed_imports=False)\n'
        "custom_hooks = [dict(type='DumpRankWeightsHook')]")
    work = str(tmp_path / 'work')
    proc = run_tool(['bash', DIST_TRAIN, config, '2', '--work-dir', work],
                    env_extra=dict(PYTHONPATH=str(tmp_path), PORT='29517',
                                   PYTHON=PYTHON))
    assert_ok(proc)
    rank0 = torch.load(osp.join(work, 'rank0.pth'))
    rank1 = torch.load(osp.join(work, 'rank1.pth'))
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    # Training changed the weights, so the equality is not trivial.
    initial = torch.load(osp.join(work, 'epoch_1.pth'),
                         weights_only=False)['state_dict']
    assert not torch.equal(initial['head.fc.weight'], rank0['head.fc.weight'])
    # Each rank saw half of the 64-image split: 4 iterations of 8 per epoch.
    assert 'Epoch(train) [1][4/4]' in proc.stdout + proc.stderr


def test_sweep_finds_the_benchmark_configs_of_every_method(tmp_path):
    """``--method spt-lora`` / ``spt-adapter`` find configs/spt/vit-b-lora_*
    / vit-b-adapter_*; the other methods configs/<method>/vit-b_*."""
    spec = importlib.util.spec_from_file_location('sweep', SWEEP)
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    layouts = (('trpts', 'trpts', 'vit-b'), ('gps', 'gps', 'vit-b'),
               ('rlrr', 'rlrr', 'vit-b'),
               ('sparse-tuning', 'sparse-tuning', 'vit-b'),
               ('spt-lora', 'spt', 'vit-b-lora'),
               ('spt-adapter', 'spt', 'vit-b-adapter'))
    for method, folder, prefix in layouts:
        for benchmark, count, suffix in (('vtab1k', 19, 'vtab1k-{}'),
                                         ('fgvc', 5, '{}')):
            tasks = sweep.resolve_tasks(benchmark, None)
            jobs = sweep.benchmark_jobs(benchmark, method, tasks)
            assert len(jobs) == count
            for job in jobs:
                assert job.config == osp.join(
                    REPO, 'configs', folder,
                    f'{prefix}_{suffix.format(job.name)}.py')
                assert osp.isfile(job.config), job.config
    # --config-dir replaces the folder, the method keeps its prefix
    job, = sweep.benchmark_jobs('fgvc', 'spt-adapter', {'cub': 'cub'}, 'x')
    assert job.config == osp.join('x', 'vit-b-adapter_cub.py')

    work = str(tmp_path / 'work')
    proc = run_tool([
        PYTHON, SWEEP, '--benchmark', 'vtab1k', '--method', 'spt-adapter',
        '--tasks', 'cifar', 'kitti', '--work-root', work, '--dry-run'
    ])
    assert_ok(proc)
    assert 'not found' not in proc.stdout
    assert [line.split()[2:5] for line in proc.stdout.splitlines()] == [[
        osp.join(REPO, 'configs', 'spt', f'vit-b-adapter_vtab1k-{token}.py'),
        '--work-dir',
        osp.join(work, token)
    ] for token in ('cifar100', 'kitti')]
    assert not osp.exists(work)
