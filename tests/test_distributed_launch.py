"""Launch scripts: a simulated two-node launch and the slurm command.

Two ``tools/dist_train.sh CONFIG 1`` launches with ``NNODES=2`` and
``NODE_RANK=0/1`` on this machine (gloo, loopback) form one two-rank job;
it must train with the same selection and weights as one two-process
launch.  ``tools/slurm_train.sh`` is checked against a stand-in ``srun``
that records its arguments (no slurm needed).
"""
import os
import os.path as osp
import subprocess

import torch
from conftest import PYTHON, REPO, assert_ok, run_tool
from test_trpts_runner import _config
from test_trpts_runner import pretrained  # noqa: F401  (fixture)

DIST_TRAIN = osp.join(REPO, 'tools', 'dist_train.sh')
SLURM_TRAIN = osp.join(REPO, 'tools', 'slurm_train.sh')
SGD = "dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=1e-4)"
HOOK = ("dict(type='FisherSelectionHook', target_ratio=0.2, batch_size=4, "
        'progress=False)')


def test_two_node_launch_equals_one_two_process_launch(
        tmp_path, mini_vtab, pretrained):  # noqa: F811
    config = _config(tmp_path, mini_vtab, pretrained, SGD, HOOK, batch_size=8)
    one_node = str(tmp_path / 'one_node')
    assert_ok(run_tool(['bash', DIST_TRAIN, config, '2', '--work-dir',
                        one_node],
                       env_extra=dict(PORT='29561', PYTHON=PYTHON)))
    two_nodes = str(tmp_path / 'two_nodes')
    env = dict(os.environ, NNODES='2', MASTER_ADDR='127.0.0.1',
               PORT='29563', PYTHON=PYTHON)
    procs = [
        subprocess.Popen(['bash', DIST_TRAIN, config, '1', '--work-dir',
                          two_nodes], env=dict(env, NODE_RANK=str(rank)),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True) for rank in (0, 1)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    log = outputs[0][0] + outputs[0][1]
    assert 'Epoch(train) [2][4/4]' in log  # 64 samples / (2 ranks x 8)
    first = torch.load(osp.join(one_node, 'epoch_2.pth'), weights_only=False)
    second = torch.load(osp.join(two_nodes, 'epoch_2.pth'),
                        weights_only=False)
    assert first['selection']['checksum'] == second['selection']['checksum']
    for name, value in first['state_dict'].items():
        # Same sharding and reduction: float summation order only.
        torch.testing.assert_close(second['state_dict'][name], value,
                                   rtol=0, atol=1e-5, msg=name)


def test_slurm_script_builds_the_srun_command(tmp_path):
    fake_bin = tmp_path / 'bin'
    fake_bin.mkdir()
    record = tmp_path / 'srun_args'
    srun = fake_bin / 'srun'
    srun.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > {record}\n')
    srun.chmod(0o755)
    proc = run_tool(
        ['bash', SLURM_TRAIN, 'gpu-part', 'trpts-cub',
         'configs/trpts/vit-b_cub.py', 'work_dirs/cub', '--amp'],
        env_extra=dict(PATH=f'{fake_bin}:{os.environ["PATH"]}', GPUS='16',
                       GPUS_PER_NODE='8', CPUS_PER_TASK='6',
                       SRUN_ARGS='--quotatype=auto', PYTHON='python3'))
    assert_ok(proc)
    args = record.read_text().splitlines()
    assert args == [
        '-p', 'gpu-part', '--job-name=trpts-cub', '--gres=gpu:8',
        '--ntasks=16', '--ntasks-per-node=8', '--cpus-per-task=6',
        '--kill-on-bad-exit=1', '--quotatype=auto', 'python3', '-u',
        osp.join(REPO, 'tools', 'train.py'), 'configs/trpts/vit-b_cub.py',
        '--work-dir=work_dirs/cub', '--launcher=slurm', '--amp'
    ]
