"""Launch scripts: a simulated two-node launch and the slurm command.

Two ``tools/dist_train.sh CONFIG 1`` launches with ``NNODES=2`` and
``NODE_RANK=0/1`` on this machine (gloo, loopback) form one two-rank job;
it must train with the same selection and weights as one two-process
launch.  ``tools/slurm_train.sh`` is checked against a stand-in ``srun``
that records its arguments (no slurm needed).
"""
import glob
import os
import os.path as osp
import re
import signal
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
    # Frozen tensors left DDP: it registers the selected values + dense
    # tensors only.
    trained = len(first['selection']['indices']) + len(
        first['selection']['full'])
    assert re.search(rf'{trained} tensors \([\d,]+ entries\) compute '
                     'gradients; the model was wrapped again in '
                     'MMDistributedDataParallel', log), log[-3000:]
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


def test_killed_two_rank_run_resumes_to_an_uninterrupted_runs_weights(
        tmp_path, mini_vtab, pretrained):  # noqa: F811
    # 64 samples / (2 ranks x 2) = 16 iterations an epoch, each logged.
    config = _config(tmp_path, mini_vtab, pretrained, SGD, HOOK, batch_size=2,
                     extra='randomness = dict(seed=0)\n'
                     'default_hooks = dict(logger=dict(interval=1))\n')
    three_epochs = ['--cfg-options', 'train_cfg.max_epochs=3']
    env = dict(PORT='29571', PYTHON=PYTHON)
    straight = str(tmp_path / 'straight')
    assert_ok(run_tool(['bash', DIST_TRAIN, config, '2', '--work-dir',
                        straight, *three_epochs], env_extra=env, timeout=600))
    killed = str(tmp_path / 'killed')
    proc = subprocess.Popen(
        ['bash', DIST_TRAIN, config, '2', '--work-dir', killed,
         *three_epochs], env=dict(os.environ, PYTHONUNBUFFERED='1', **env),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if re.search(r'\[2\]\[ *1/16\]', line):  # (coloured text)
            # SIGKILL the launcher and both ranks (torchrun starts the
            # workers in their own sessions): mid-epoch 2.
            subprocess.run(['pkill', '-KILL', '-f', killed], check=False)
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    proc.stdout.close()
    assert proc.returncode != 0, ''.join(seen[-20:])
    assert osp.isfile(osp.join(killed, 'epoch_1.pth'))
    assert not osp.exists(osp.join(killed, 'epoch_2.pth'))
    resumed = run_tool(['bash', DIST_TRAIN, config, '2', '--work-dir', killed,
                        '--resume', *three_epochs], env_extra=env,
                       timeout=600)
    assert_ok(resumed)
    log = resumed.stdout + resumed.stderr
    assert 'resumed epoch: 1' in log and 'Fisher pass:' not in log
    one = torch.load(osp.join(straight, 'epoch_3.pth'), weights_only=False)
    two = torch.load(osp.join(killed, 'epoch_3.pth'), weights_only=False)
    assert one['selection']['checksum'] == two['selection']['checksum']
    for name, value in one['state_dict'].items():
        # Same data order, same selection: identical up to float noise.
        torch.testing.assert_close(two['state_dict'][name], value,
                                   rtol=0, atol=1e-6, msg=name)
    assert not glob.glob(osp.join(killed, '*.part'))
