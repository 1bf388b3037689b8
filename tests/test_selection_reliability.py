"""The selection is a trustworthy artifact: restored, reproducible, checked.

Runner-level where the failure was runner-level (a resumed run that picks a
new selection, a record made under other rules).
"""
import os.path as osp

import pytest
import torch
from conftest import PYTHON, REPO, assert_ok, run_tool
from mmpretrain.registry import MODELS
from test_trpts_runner import (_assert_only_selection_changed, _config, _log,
                               resume_to_epoch_3)
from test_trpts_runner import pretrained  # noqa: F401  (fixture)

from mmtrpts.selection.eligibility import assign_roles
from mmtrpts.utils import sha256_file

TRAIN = osp.join(REPO, 'tools', 'train.py')
COMPUTE_FISHER = osp.join(REPO, 'tools', 'compute_fisher.py')
ADAM = "dict(type='Adam', lr=1e-2, weight_decay=0.)"
PLACED_HOOK = ("dict(type='FisherSelectionHook', target_ratio=0.2, "
               'batch_size=16, progress=False, '
               "token_placement=dict(mode='sparse', num_blocks=1))")
TOKENS = """model['backbone'].update(type='TokenKeepFuseViT', keep_rate=0.9)
"""


def test_resume_without_optimizer_state_restores_selection_and_placement(
        tmp_path, mini_vtab, pretrained):  # noqa: F811
    config = _config(tmp_path, mini_vtab, pretrained, ADAM, hook=PLACED_HOOK,
                     extra=TOKENS + "default_hooks = dict(checkpoint=dict("
                     "type='AtomicCheckpointHook', interval=1, "
                     'save_optimizer=False))\n')
    work = str(tmp_path / 'work')
    assert_ok(run_tool([PYTHON, TRAIN, config, '--work-dir', work]))
    epoch1 = torch.load(osp.join(work, 'epoch_2.pth'), weights_only=False)
    assert 'optimizer' not in epoch1
    selection = epoch1['selection']
    log = resume_to_epoch_3(config, work)  # from the record
    assert 'Token selection placed' not in log
    epoch2 = torch.load(osp.join(work, 'epoch_3.pth'), weights_only=False)
    assert epoch2['selection']['checksum'] == selection['checksum']
    mask = 'backbone.keep_layer_mask'
    assert torch.equal(epoch2['state_dict'][mask], epoch1['state_dict'][mask])
    assert epoch1['state_dict'][mask].sum() == 1
    base = torch.load(pretrained)['state_dict']
    _assert_only_selection_changed(epoch2['state_dict'], base, selection)


def test_resume_from_a_checkpoint_without_selection_fails(
        tmp_path, mini_vtab, pretrained):  # noqa: F811
    config = _config(tmp_path, mini_vtab, pretrained, ADAM)
    work = str(tmp_path / 'work')
    assert_ok(run_tool([PYTHON, TRAIN, config, '--work-dir', work]))
    path = osp.join(work, 'epoch_2.pth')
    checkpoint = torch.load(path, weights_only=False)
    del checkpoint['selection'], checkpoint['optimizer']
    torch.save(checkpoint, path)
    proc = run_tool([PYTHON, TRAIN, config, '--work-dir', work, '--resume',
                     '--cfg-options', 'train_cfg.max_epochs=3'])
    assert proc.returncode != 0
    assert 'holds no parameter selection' in proc.stderr
    assert 'Fisher pass:' not in _log(proc)


def _compute_fisher(config, out):
    assert_ok(run_tool([PYTHON, COMPUTE_FISHER, config, '--out', out]))
    return torch.load(osp.join(out, 'selection.pth'), weights_only=True)


def test_tool_and_hook_give_the_same_recorded_selection(
        tmp_path, mini_vtab, pretrained):  # noqa: F811
    config = _config(tmp_path, mini_vtab, pretrained, ADAM)
    first = _compute_fisher(config, str(tmp_path / 'fisher1'))
    second = _compute_fisher(config, str(tmp_path / 'fisher2'))
    assert first['checksum'] == second['checksum']
    work = str(tmp_path / 'work')
    assert_ok(run_tool([PYTHON, TRAIN, config, '--work-dir', work,
                        '--cfg-options', 'randomness.seed=123']))
    hook = torch.load(osp.join(work, 'selection', 'selection.pth'),
                      weights_only=True)
    assert hook['checksum'] == first['checksum']
    # Everything that determines the selection is in the record.
    assert first['seed'] == 0 and first['head'] == 'random'
    assert first['rule_options']['target_ratio'] == 0.2
    assert first['settings']['rule'] == 'trpts'
    assert (first['fisher']['pipeline'], first['fisher']['num_samples'],
            first['fisher']['batch_size']) == ('test', 64, 16)
    assert first['data']['type'] == 'VTAB1k'
    assert first['data']['split'] == 'train800val200'
    assert first['roles']['backbone.pos_embed'] == 'frozen'
    assert first['roles']['backbone.layers.0.attn.qkv.weight'] == 'masked'
    assert first['base_checkpoint'] == dict(path=pretrained,
                                            sha256=sha256_file(pretrained))
    assert sorted(first['block_densities']) == [0, 1]


def test_records_made_for_other_rules_or_weights_are_refused(
        tmp_path, mini_vtab, pretrained):  # noqa: F811
    (tmp_path / 'a').mkdir()
    record_dir = str(tmp_path / 'fisher')
    _compute_fisher(_config(tmp_path / 'a', mini_vtab, pretrained, ADAM),
                    record_dir)
    selection = f'custom_hooks.0.selection_file={record_dir}/selection.pth'
    # Other eligibility rules: norms trained densely in this run.
    (tmp_path / 'b').mkdir()
    config = _config(tmp_path / 'b', mini_vtab, pretrained, ADAM,
                     extra="optim_wrapper['eligibility'] = "
                     'dict(train_norm=True)\n')
    proc = run_tool([PYTHON, TRAIN, config, '--work-dir',
                     str(tmp_path / 'wb'), '--cfg-options', selection])
    assert proc.returncode != 0
    assert 'made under other eligibility rules' in proc.stderr
    assert ('backbone.layers.0.ln1.weight: frozen in the record, full in '
            'this run') in proc.stderr
    # Other weights of the same shapes.
    other = str(tmp_path / 'other.pth')
    state = torch.load(pretrained)
    state['state_dict'] = {k: v + 0.01 for k, v in
                           state['state_dict'].items()}
    torch.save(state, other)
    (tmp_path / 'c').mkdir()
    config = _config(tmp_path / 'c', mini_vtab, other, ADAM)
    proc = run_tool([PYTHON, TRAIN, config, '--work-dir',
                     str(tmp_path / 'wc'), '--cfg-options', selection])
    assert proc.returncode != 0
    assert f'was made on {pretrained}' in proc.stderr
    assert f'this run starts from {other}' in proc.stderr
    # A missing selection file is named.
    proc = run_tool([PYTHON, TRAIN, config, '--work-dir',
                     str(tmp_path / 'wd'), '--cfg-options',
                     'custom_hooks.0.selection_file=/no/such/selection.pth'])
    assert proc.returncode != 0
    assert "selection_file '/no/such/selection.pth' does not exist" in \
        proc.stderr
    assert 'Fisher pass:' not in _log(proc)


def test_record_for_another_architecture_is_refused():
    from mmtrpts.selection import ParameterSelector, validate_record

    def vit(dims, depth):
        return MODELS.build(dict(
            type='ImageClassifier',
            backbone=dict(type='VisionTransformer', arch=dict(
                embed_dims=dims, num_layers=depth, num_heads=2,
                feedforward_channels=2 * dims), img_size=16, patch_size=8),
            head=dict(type='LinearClsHead', num_classes=3, in_channels=dims)))

    model = vit(16, 2)
    named = dict(model.named_parameters())
    roles = assign_roles(model)
    scores = {n: torch.rand(p.shape) for n, p in named.items()
              if roles[n] == 'masked'}
    record = ParameterSelector('gps', k=1).select(scores, named, roles)
    wider = {n: p.shape for n, p in vit(32, 2).named_parameters()}
    with pytest.raises(ValueError, match=r'the model has shape \[32, 3, 8, '
                       r'8\] but the selection record in sel\.pth was made '
                       r'for \[16, 3, 8, 8\]'):
        validate_record(record, wider, source='sel.pth')
    shallower = {n: p.shape for n, p in vit(16, 1).named_parameters()}
    with pytest.raises(ValueError, match=r"names 'backbone\.layers\.1\."):
        validate_record(record, shallower, source='sel.pth')


def test_frozen_tensors_compute_and_keep_no_gradient(
        tmp_path, mini_vtab, pretrained):  # noqa: F811
    from mmengine.config import Config
    from mmengine.runner import Runner
    cfg = Config.fromfile(_config(tmp_path, mini_vtab, pretrained, ADAM))
    cfg.work_dir = str(tmp_path / 'work')
    runner = Runner.from_cfg(cfg)
    runner.train()
    roles = runner.optim_wrapper.roles
    frozen = [n for n, role in roles.items() if role == 'frozen']
    assert 'backbone.pos_embed' in frozen and len(frozen) >= 10
    params = dict(runner.model.named_parameters())
    for name in frozen:
        assert params[name].grad is None and not params[name].requires_grad
    # Sparse-value layers: the values train, the dense weight keeps no grad.
    qkv = 'backbone.layers.0.attn.qkv.weight'
    assert not params[qkv].requires_grad and params[qkv].grad is None
    assert params[f'{qkv[:-len("weight")]}weight_values'].requires_grad
    assert all(p.grad is None for p in params.values()
               if not p.requires_grad)
    assert params['head.fc.weight'].requires_grad  # trained tensors do
    base = torch.load(pretrained)['state_dict']
    assert torch.equal(params['backbone.pos_embed'].detach(),
                       base['backbone.pos_embed'])
