"""TR-PTS parameter selection through the real runner and tools."""
import json
import os
import os.path as osp
import re

import pytest
import torch
from conftest import (PYTHON, REPO, assert_ok, run_tool, write_tiny_config)
from mmpretrain.registry import MODELS

TRAIN = osp.join(REPO, 'tools', 'train.py')
DIST_TRAIN = osp.join(REPO, 'tools', 'dist_train.sh')
COMPUTE_FISHER = osp.join(REPO, 'tools', 'compute_fisher.py')
# The paper's frozen set (the demo's config trains pos-embed, [CLS], norms).
TRPTS_BASE = 'vit-tiny_trpts-param-paper-frozen_mini-vtab.py'
TINY_ARCH = dict(embed_dims=32, num_layers=2, num_heads=2,
                 feedforward_channels=64)
FROZEN_BY_DEFAULT = ('backbone.pos_embed', 'backbone.cls_token',
                     'backbone.ln1.weight', 'backbone.layers.0.ln1.weight',
                     'backbone.layers.1.ln2.bias')


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory) -> str:
    """A state-dict-only 'pretrained' tiny backbone, as the converter writes.
    """
    torch.manual_seed(123)
    backbone = MODELS.build(
        dict(type='VisionTransformer', arch=TINY_ARCH, img_size=32,
             patch_size=4))
    backbone.init_weights()
    path = str(tmp_path_factory.mktemp('pretrained') / 'tiny.pth')
    torch.save(dict(meta={}, state_dict={
        f'backbone.{k}': v for k, v in backbone.state_dict().items()}), path)
    return path


def _config(tmp_path, data_root, pretrained, optimizer, hook='', extra='',
            batch_size=8):
    hook = hook or ("dict(type='FisherSelectionHook', target_ratio=0.2, "
                    'batch_size=16, progress=False)')
    return write_tiny_config(
        str(tmp_path / 'cfg.py'), data_root, base=TRPTS_BASE,
        batch_size=batch_size, extra=f"""
model['backbone']['init_cfg'] = dict(
    type='Pretrained', checkpoint='{pretrained}', prefix='backbone.')
optim_wrapper = dict(optimizer={optimizer})
custom_hooks = [{hook}]
{extra}""")


def _assert_only_selection_changed(state, base, selection):
    for name, value in base.items():
        if name in selection['indices']:
            mask = torch.zeros(value.numel(), dtype=torch.bool)
            mask[selection['indices'][name].long()] = True
            after = state[name].view(-1)
            assert torch.equal(after[~mask], value.view(-1)[~mask]), name
            assert (after[mask] != value.view(-1)[mask]).float().mean() > .5
        elif name not in selection['full']:
            assert torch.equal(state[name], value), name
    for name in FROZEN_BY_DEFAULT:
        assert name not in selection['full'] and name in base


def _log(proc):
    return proc.stdout + proc.stderr


def resume_to_epoch_3(config: str, work: str) -> str:
    """Resume a 2-epoch run for a third; check the selection is restored
    (no second Fisher pass) and the sparse-value form retaken.

    Returns:
        str: The resumed run's log.
    """
    proc = run_tool([PYTHON, TRAIN, config, '--work-dir', work, '--resume',
                     '--cfg-options', 'train_cfg.max_epochs=3'])
    assert_ok(proc)
    log = _log(proc)
    assert 'resumed epoch: 2' in log
    assert 'Selection restored from the checkpoint' in log
    assert 'Fisher pass:' not in log
    assert 'Training form: 9 sparse-value layers' in log
    return log


@pytest.mark.parametrize('optimizer', [
    "dict(type='AdamW', lr=1e-2, weight_decay=0.05)",
    "dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4)"
], ids=['adamw', 'sgd-momentum'])
def test_train_then_resume_keeps_unselected_entries_exact(
        tmp_path, mini_vtab, pretrained, optimizer):
    config = _config(tmp_path, mini_vtab, pretrained, optimizer)
    work = str(tmp_path / 'work')
    first = run_tool([PYTHON, TRAIN, config, '--work-dir', work])
    assert_ok(first)
    assert 'Fisher pass: 64 samples in 4 batches' in _log(first)
    assert re.search(r'Trainable parameters: [\d,]+ / [\d,]+ .*target '
                     r'20\.000%', _log(first))
    for name in ('selection.json', 'selection.pth', 'selection_density.png'):
        assert osp.isfile(osp.join(work, 'selection', name))
    base = torch.load(pretrained)['state_dict']
    epoch2 = torch.load(osp.join(work, 'epoch_2.pth'), weights_only=False)
    selection = epoch2['selection']
    assert 0.19 < selection['budget']['realized_ratio'] < 0.21
    _assert_only_selection_changed(epoch2['state_dict'], base, selection)

    resume_to_epoch_3(config, work)
    epoch3 = torch.load(osp.join(work, 'epoch_3.pth'), weights_only=False)
    assert epoch3['selection']['checksum'] == selection['checksum']
    _assert_only_selection_changed(epoch3['state_dict'], base, selection)
    assert not torch.equal(epoch3['state_dict']['head.fc.weight'],
                           epoch2['state_dict']['head.fc.weight'])


def test_compute_fisher_then_train_from_selection_file(
        tmp_path, mini_vtab, pretrained):
    config = _config(tmp_path, mini_vtab, pretrained,
                     "dict(type='Adam', lr=1e-2, weight_decay=0.)")
    out = str(tmp_path / 'fisher')
    proc = run_tool([PYTHON, COMPUTE_FISHER, config, '--out', out])
    assert_ok(proc)
    assert re.search(r'trainable [\d,]+ = (19|20)\.\d{3}% of the backbone',
                     proc.stdout)
    for name in ('selection.pth', 'selection.json', 'selection_density.png'):
        assert osp.isfile(osp.join(out, name))
    record = torch.load(osp.join(out, 'selection.pth'), weights_only=True)
    work = str(tmp_path / 'work')
    train = run_tool([
        PYTHON, TRAIN, config, '--work-dir', work, '--auto-scale-lr',
        '--cfg-options', f'custom_hooks.0.selection_file={out}/selection.pth'
    ])
    assert_ok(train)
    assert 'Fisher pass:' not in _log(train)
    assert f'Selection loaded from {out}/selection.pth' in _log(train)
    final = torch.load(osp.join(work, 'epoch_2.pth'), weights_only=False)
    assert final['selection']['checksum'] == record['checksum']
    # auto_scale_lr (batch 8 / base 32) survives arming: the armed groups
    # carry the scaled initial lr the schedulers work from.
    assert 'Scaling the original LR by 0.25' in _log(train)
    groups = final['optimizer']['param_groups']
    assert [g['initial_lr'] for g in groups] == [1e-2 * 0.25] * len(groups)


def test_two_gloo_ranks_match_one_process(tmp_path, mini_vtab, pretrained):
    # Per-sample Fisher (batch_size=1) does not depend on how the samples
    # are sharded, so one process and two ranks score the same data.
    hook = ("dict(type='FisherSelectionHook', target_ratio=0.2, "
            'batch_size=1, progress=False)')
    # SGD is linear in the gradients, so the two runs differ only by float
    # summation order.  (Adam(W) divides by sqrt(v): on entries whose true
    # gradient is ~0, e.g. parts of the qkv bias, it turns that order noise
    # into lr-sized steps -- measured up to 1.1e-4 after 8 steps at lr 1e-3.)
    optimizer = "dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=1e-4)"
    single_dir, dist_dir = tmp_path / 'single', tmp_path / 'dist'
    single_dir.mkdir()
    dist_dir.mkdir()
    single = _config(single_dir, mini_vtab, pretrained, optimizer, hook,
                     batch_size=16)
    dist = _config(dist_dir, mini_vtab, pretrained, optimizer, hook,
                   batch_size=8)
    proc = run_tool([PYTHON, TRAIN, single, '--work-dir',
                     str(single_dir / 'w')])
    assert_ok(proc)
    proc = run_tool(['bash', DIST_TRAIN, dist, '2', '--work-dir',
                     str(dist_dir / 'w')],
                    env_extra=dict(PORT='29531', PYTHON=PYTHON))
    assert_ok(proc)
    assert 'Epoch(train) [2][4/4]' in _log(proc)
    one = torch.load(single_dir / 'w' / 'epoch_2.pth', weights_only=False)
    two = torch.load(dist_dir / 'w' / 'epoch_2.pth', weights_only=False)
    assert one['selection']['checksum'] == two['selection']['checksum']
    for name, value in one['state_dict'].items():
        # float sums differ in order (gloo all-reduce): tolerance 1e-5.
        torch.testing.assert_close(two['state_dict'][name], value,
                                   rtol=0, atol=1e-5, msg=name)


def test_stock_mmpretrain_resnet_config_with_constructor_and_hook(
        tmp_path, mini_vtab):
    """mmpretrain's own ResNet-18 CIFAR config plus the two components."""
    config = tmp_path / 'resnet.py'
    config.write_text(f"""
_base_ = ['mmpretrain::resnet/resnet18_8xb16_cifar10.py']
custom_imports = dict(imports=['mmtrpts'], allow_failed_imports=False)
model = dict(head=dict(num_classes=6))
pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
dataset = dict(_delete_=True, type='VTAB1k', data_root='{mini_vtab}',
               task='texture', num_classes=6, pipeline=pipeline)
train_dataloader = dict(batch_size=16, num_workers=0,
                        persistent_workers=False, dataset=dataset)
val_dataloader = dict(batch_size=16, num_workers=0, persistent_workers=False,
                      dataset=dict(dataset, split='test'))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=1)
param_scheduler = []
optim_wrapper = dict(constructor='FisherMaskOptimWrapperConstructor')
custom_hooks = [dict(type='FisherSelectionHook', rule='gps', k=1,
                     batch_size=16, progress=False)]
""")
    work = str(tmp_path / 'work')
    proc = run_tool([PYTHON, TRAIN, str(config), '--work-dir', work])
    assert_ok(proc)
    log = _log(proc)
    assert 'Fisher pass: 64 samples' in log
    assert re.search(r'backbone\.conv1\s+64x27\s+1\s+64\b', log) or \
        re.search(r'conv1\s+64x27\s+1\s+64', log)
    checkpoint = torch.load(osp.join(work, 'epoch_1.pth'), weights_only=False)
    selection = checkpoint['selection']
    conv = selection['indices']['backbone.layer1.0.conv1.weight']
    assert conv.numel() == 64  # gps k=1: one entry per output channel
    assert 'backbone.bn1.weight' not in selection['full']  # norms frozen
    assert 'accuracy/top1' in log


def test_co_selection_places_tokens_in_sparse_blocks_and_test_restores_it(
        tmp_path, mini_vtab, pretrained):
    hook = ("dict(type='FisherSelectionHook', target_ratio=0.2, "
            "batch_size=16, progress=False, "
            "token_placement=dict(mode='sparse', num_blocks=1))")
    config = _config(
        tmp_path, mini_vtab, pretrained,
        "dict(type='Adam', lr=1e-2, weight_decay=0.)", hook,
        extra="model['backbone'].update(type='TokenKeepFuseViT', "
        'keep_rate=0.5)')
    work = str(tmp_path / 'work')
    proc = run_tool([PYTHON, TRAIN, config, '--work-dir', work])
    assert_ok(proc)
    match = re.search(r'Token selection placed in blocks \[(\d)\] \(sparse '
                      r'placement, keep_rate=0\.5\); selected-parameter '
                      r'density per block: 0: ([\d.]+)%, 1: ([\d.]+)%',
                      _log(proc))
    assert match, _log(proc)[-3000:]
    block, d0, d1 = int(match.group(1)), float(match.group(2)), \
        float(match.group(3))
    assert block == (0 if d0 <= d1 else 1)
    checkpoint = torch.load(osp.join(work, 'epoch_2.pth'), weights_only=False)
    assert checkpoint['selection']['token_blocks'] == [block]
    mask = checkpoint['state_dict']['backbone.keep_layer_mask']
    assert mask.tolist() == [i == block for i in range(2)]
    # tools/test.py builds the model without keep layers; the checkpoint
    # brings the placement back, and the test accuracy is the same.
    out = str(tmp_path / 'metrics.json')
    proc = run_tool([PYTHON, osp.join(REPO, 'tools', 'test.py'), config,
                     osp.join(work, 'epoch_2.pth'), '--out', out])
    assert_ok(proc)
    train_log = ''.join(
        open(osp.join(work, d, f'{d}.log')).read()
        for d in os.listdir(work) if osp.isfile(osp.join(work, d, f'{d}.log')))
    val = re.findall(r'Epoch\(val\) \[2\]\[\d+/\d+\]\s+accuracy/top1: '
                     r'([\d.]+)', train_log)
    with open(out) as f:
        test_top1 = json.load(f)['accuracy/top1']
    assert float(val[-1]) == pytest.approx(test_top1, abs=1e-4)
