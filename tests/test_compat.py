"""The stack fixes applied on ``import mmtrpts``."""
import os.path as osp
import pickle

import mmtrpts
import numpy as np
import pytest
import torch
from conftest import PYTHON, REPO, assert_ok, run_tool, write_tiny_config
from mmengine.config import Config
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint

from mmtrpts.compat import checkpoint_loader, cpu_dist, torchvision_ops
from mmtrpts.compat.stack_check import check_stack

SHIM_APPLIED = torchvision_ops._FRAGMENT is not None


def test_import_mmtrpts_makes_mmpretrain_models_importable():
    proc = run_tool([
        PYTHON, '-c', 'import mmtrpts, mmpretrain.models, torchvision; '
        'from mmpretrain.models import VisionTransformer; print("ok")'
    ])
    assert_ok(proc)
    assert proc.stdout.strip().endswith('ok')


@pytest.mark.skipif(
    not SHIM_APPLIED, reason='torchvision extension loads: no fix needed')
def test_without_the_shim_mmpretrain_models_fails():
    proc = run_tool([PYTHON, '-c', 'import mmpretrain.models'])
    assert proc.returncode != 0
    assert 'torchvision::nms does not exist' in proc.stderr


def test_shim_is_a_no_op_once_applied_or_after_torchvision():
    assert torchvision_ops.ensure_torchvision_op_schemas() is False


def test_mmpretrain_own_train_tool_with_custom_imports(tmp_path, mini_vtab):
    """mmpretrain's tools/train.py loads mmtrpts via custom_imports only."""
    import mmpretrain
    tool = osp.join(
        osp.dirname(mmpretrain.__file__), '.mim', 'tools', 'train.py')
    config = write_tiny_config(str(tmp_path / 'cfg.py'), mini_vtab)
    proc = run_tool([
        PYTHON, tool, config, '--work-dir',
        str(tmp_path / 'work'), '--no-persistent-workers', '--no-pin-memory'
    ])
    assert_ok(proc)
    assert osp.isfile(tmp_path / 'work' / 'epoch_2.pth')


def _runner_like_checkpoint(path):
    buffer = HistoryBuffer()
    buffer.update(0.5)
    torch.save(
        dict(
            meta=dict(epoch=1, seed=np.int64(3)),
            state_dict=dict(w=torch.ones(2)),
            message_hub=dict(log_scalars=dict(loss=buffer)),
            extra=np.arange(3)), path)


def test_runner_checkpoint_loads_with_mmengines_types_only(tmp_path):
    path = str(tmp_path / 'runner.pth')
    _runner_like_checkpoint(path)
    # torch's own default stays weights_only=True for every other caller.
    with pytest.raises(pickle.UnpicklingError, match='weights_only'):
        torch.load(path)
    checkpoint = _load_checkpoint(path, map_location='cpu')
    assert checkpoint['meta']['epoch'] == 1
    assert float(checkpoint['message_hub']['log_scalars']['loss'].current()) \
        == 0.5
    # The allow-list is scoped to one load: nothing is added globally.
    assert not {getattr, HistoryBuffer, np.ndarray} & set(
        torch.serialization.get_safe_globals())


def test_loader_is_registered_only_for_local_files():
    assert CheckpointLoader._get_checkpoint_loader('/a/b.pth') is \
        checkpoint_loader.load_from_local
    assert CheckpointLoader._get_checkpoint_loader('https://x/b.pth') is \
        not checkpoint_loader.load_from_local
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        checkpoint_loader.load_from_local('/no/such/missing.pth')
    assert checkpoint_loader.patch_mmengine_checkpoint_loader() is False


def test_cpu_distributed_is_a_no_op_without_launcher():
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    assert cpu_dist.setup_cpu_distributed(cfg, 'none') is False
    assert cfg.env_cfg.dist_cfg.backend == 'nccl'
    assert 'model_wrapper_cfg' not in cfg


def test_cpu_ddp_wrapper_cfg_keeps_user_settings():
    cfg = Config(
        dict(
            model_wrapper_cfg=dict(
                find_unused_parameters=True, device_ids=[0])))
    wrapper = cpu_dist.cpu_ddp_wrapper_cfg(cfg)
    assert wrapper == dict(
        type='MMDistributedDataParallel',
        device_ids=None,
        broadcast_buffers=False,
        find_unused_parameters=True)


def test_cpu_distributed_rejects_unknown_launcher(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with pytest.raises(ValueError, match="launcher='mpi'"):
        cpu_dist.setup_cpu_distributed(Config(dict()), 'mpi')


def test_stack_check_names_the_unsupported_package():
    with pytest.raises(
            ImportError, match=r'mmengine==0\.10\.7 \(supported: 0\.11\.0'):
        check_stack({'mmengine': ('0.11.0', '1.0.0')})
    check_stack()  # the installed stack is supported


def test_version():
    assert mmtrpts.__version__ == '0.1.0'
