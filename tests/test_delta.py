"""Delta checkpoints: make/apply, the mmengine loader and the CLI tools."""
import importlib.util
import os.path as osp
import sys

import mmtrpts  # noqa: F401  (stack fixes first)
import numpy as np
import pytest
import torch
from conftest import PYTHON, REPO, assert_ok, run_tool
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import load_checkpoint
from mmpretrain.apis import get_model
from mmpretrain.registry import MODELS

from mmtrpts.checkpoints import apply_delta, delta_size_report, make_delta
from mmtrpts.selection.record import selection_checksum

init_default_scope('mmpretrain')
TOOLS = osp.join(REPO, 'tools', 'model_converters')
EXPORT = osp.join(TOOLS, 'export_delta.py')
MERGE = osp.join(TOOLS, 'merge.py')
SPARSE = ('patch_embed.projection.weight', 'attn.qkv.weight',
          'attn.proj.weight', 'ffn.layers.0.0.weight', 'ffn.layers.1.weight')


def model_cfg(backbone_init_cfg=None) -> dict:
    backbone = dict(
        type='VisionTransformer',
        img_size=32,
        patch_size=4,
        arch=dict(
            embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64),
        init_cfg=backbone_init_cfg)
    return dict(
        type='ImageClassifier',
        backbone=backbone,
        head=dict(type='LinearClsHead', num_classes=5, in_channels=32))


def build_model(backbone_init_cfg=None):
    return MODELS.build(model_cfg(backbone_init_cfg)).eval()


def logits(model, state_dict=None):
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=True)
    torch.manual_seed(1)
    with torch.no_grad():
        return model(torch.randn(2, 3, 32, 32), mode='tensor')


@pytest.fixture
def run(tmp_path):
    """A base checkpoint, a selection and the 'trained' state dict."""
    torch.manual_seed(0)
    model = build_model()
    model.init_weights()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    base = {k: v for k, v in start.items() if k.startswith('backbone.')}
    base_path = str(tmp_path / 'base.pth')
    torch.save(dict(meta=dict(), state_dict=base), base_path)
    indices, full, trained = {}, [], {k: v.clone() for k, v in start.items()}
    for name, value in trained.items():
        if name.endswith(SPARSE):
            idx = torch.randperm(value.numel())[:value.numel() // 10]
            indices[name] = idx.sort().values.to(torch.int32)
            value.view(-1)[indices[name].long()] += 1 + torch.rand(
                indices[name].numel())
        elif name.endswith('.bias') or name.startswith('head.'):
            full.append(name)
            value += 1 + torch.rand(value.shape)
    selection = dict(
        format='mmtrpts.selection',
        version=1,
        indices=indices,
        full=sorted(full),
        checksum=selection_checksum(indices),
        shapes={n: list(trained[n].shape)
                for n in indices})
    return dict(
        model=model,
        base=base,
        base_path=base_path,
        selection=selection,
        trained=trained,
        tmp=tmp_path)


def save_delta(run, name='delta.pth', **kwargs):
    kwargs.setdefault('base_checkpoint', run['base_path'])
    delta = make_delta(
        run['trained'],
        run['selection'],
        base_state_dict=run['base'],
        **kwargs)
    path = str(run['tmp'] / name)
    torch.save(delta, path)
    return delta, path


def assert_same(state_dict, expected):
    assert sorted(state_dict) == sorted(expected)
    for name in expected:
        assert torch.equal(state_dict[name], expected[name]), name


def test_apply_delta_reproduces_weights_and_outputs(run):
    delta = make_delta(
        run['trained'], run['selection'], run['base'], weights='raw')
    base_copy = {k: v.clone() for k, v in run['base'].items()}
    merged = apply_delta(run['base'], delta)
    assert_same(merged, run['trained'])
    assert_same(run['base'], base_copy)  # the base is not modified
    reference = logits(run['model'], run['trained'])
    assert torch.equal(logits(build_model(), merged), reference)
    meta = delta['meta']
    assert meta['format'] == 'mmtrpts.delta' and meta['weights'] == 'raw'
    assert meta['num_sparse_entries'] == sum(
        i.numel() for i in run['selection']['indices'].values())
    assert meta['num_dense_entries'] == sum(run['trained'][n].numel()
                                            for n in run['selection']['full'])


def test_delta_loads_with_weights_only_and_size_report(run):
    delta, path = save_delta(run)
    loaded = torch.load(path, weights_only=True)
    assert loaded['meta'] == delta['meta']
    expected = sum(8 * i.numel() for i in run['selection']['indices'].values())
    expected += sum(4 * run['trained'][n].numel()
                    for n in run['selection']['full'])
    dense = sum(4 * v.numel() for v in run['trained'].values())
    report = delta_size_report(loaded, run['trained'])
    assert report['delta_bytes'] == expected
    assert report['dense_bytes'] == dense
    assert report['fraction'] == expected / dense < 0.5


def test_mmengine_loaders_merge_the_delta(run):
    _, path = save_delta(run)
    reference = logits(run['model'], run['trained'])
    model = build_model()
    load_checkpoint(model, path, map_location='cpu', strict=True)
    assert torch.equal(logits(model), reference)
    # init_cfg Pretrained with prefix: the backbone comes from the delta.
    model = build_model(
        dict(type='Pretrained', checkpoint=path, prefix='backbone.'))
    model.init_weights()
    state = model.state_dict()
    for name, value in run['trained'].items():
        if name.startswith('backbone.'):
            assert torch.equal(state[name], value), name


def test_relative_base_path_resolves_next_to_the_delta(run):
    # The tests run from the repo root: 'base.pth' is found in tmp only.
    _, path = save_delta(run, base_checkpoint='base.pth')
    model = build_model()
    load_checkpoint(model, path, map_location='cpu', strict=True)
    assert_same(model.state_dict(), run['trained'])


def test_missing_base_file_names_the_path(run):
    _, path = save_delta(run, base_checkpoint='/no/such/vit_base.pth')
    with pytest.raises(
            FileNotFoundError,
            match=r'/no/such/vit_base\.pth.*merge\.py delta'):
        load_checkpoint(build_model(), path, map_location='cpu')


@pytest.mark.parametrize('name,change,match', [
    ('backbone.ln1.weight', slice(None), 'neither selected nor in full'),
    ('backbone.layers.0.attn.qkv.weight', None, 'outside the selection'),
])
def test_make_delta_rejects_changes_outside_the_selection(
        run, name, change, match):
    value = run['trained'][name].view(-1)
    if change is None:  # the first entry that was not selected
        selected = set(run['selection']['indices'][name].tolist())
        change = next(i for i in range(value.numel()) if i not in selected)
    value[change] += 1
    with pytest.raises(ValueError, match=rf'{name} \(.*{match}'):
        make_delta(run['trained'], run['selection'], run['base'])


def test_make_delta_rejects_new_tensors_missing_from_full(run):
    selection = dict(
        run['selection'],
        full=[n for n in run['selection']['full'] if n != 'head.fc.weight'])
    with pytest.raises(
            ValueError, match=r'head\.fc\.weight \(not in the '
            'base'):
        make_delta(run['trained'], selection, run['base'])


def test_make_delta_checks_the_selection(run):
    indices = dict(run['selection']['indices'])
    name = 'backbone.layers.1.attn.proj.weight'
    indices[name] = indices[name].clone()
    indices[name][0] = indices[name][1] + 1
    with pytest.raises(ValueError, match='checksum mismatch'):
        make_delta(run['trained'], dict(run['selection'], indices=indices))
    indices[name][0] = 5000
    with pytest.raises(ValueError, match=rf'{name}: selection indices out'):
        make_delta(run['trained'],
                   dict(run['selection'], indices=indices, checksum=None))
    with pytest.raises(TypeError, match=r"meta\['source'\]\['epoch'\]"):
        make_delta(
            run['trained'], run['selection'], source=dict(epoch=np.int64(3)))


def _corrupt(delta, name, what):
    entry = delta['delta']['sparse'][name]
    if what == 'range':
        entry['indices'][-1] = 10**6
    elif what == 'count':
        entry['values'] = entry['values'][:-1]
    elif what == 'dtype':
        entry['values'] = entry['values'].double()
    elif what == 'missing':
        delta['delta']['sparse']['backbone.nope'] = entry
    elif what == 'version':
        delta['meta']['version'] = 99


@pytest.mark.parametrize('what,match',
                         [('range', 'out of range'), ('count', 'indices but'),
                          ('dtype', 'torch.float64'),
                          ('missing', 'backbone.nope: .*no such'),
                          ('version', 'version 99')])
def test_apply_delta_validates(run, what, match):
    delta = make_delta(run['trained'], run['selection'])
    _corrupt(delta, 'backbone.layers.0.attn.qkv.weight', what)
    with pytest.raises(ValueError, match=match):
        apply_delta(run['base'], delta)


def _training_checkpoint(run, path, **extra):
    meta = dict(
        epoch=np.int64(3), iter=30, dataset_meta=dict(classes=list('abcde')))
    torch.save(
        dict(
            meta=meta,
            state_dict=run['trained'],
            selection=run['selection'],
            optimizer={},
            **extra), path)
    return path


def test_cli_export_then_merge_round_trip(run):
    tmp = run['tmp']
    ckpt = _training_checkpoint(run, str(tmp / 'epoch_3.pth'))
    delta, dense = str(tmp / 'delta.pth'), str(tmp / 'dense.pth')
    proc = run_tool([PYTHON, EXPORT, ckpt, delta, '--base', run['base_path']])
    assert_ok(proc)
    assert 'the trained weights (no EMA' in proc.stdout
    assert '% of the dense checkpoint (' in proc.stdout
    loaded = torch.load(delta, weights_only=True)
    assert loaded['meta']['base_checkpoint'] == run['base_path']
    assert loaded['meta']['dataset_meta'] == dict(classes=list('abcde'))
    assert loaded['meta']['source']['epoch'] == 3
    assert_ok(
        run_tool(
            [PYTHON, MERGE, 'delta', delta, dense, '--base',
             run['base_path']]))
    merged = torch.load(dense, weights_only=True)
    assert_same(merged['state_dict'], run['trained'])
    assert 'format' not in merged['meta']
    model = get_model(Config(dict(model=model_cfg())), delta)
    assert model._dataset_meta['classes'] == list('abcde')
    assert torch.equal(
        logits(model.eval()), logits(run['model'], run['trained']))


def _load_tool():
    spec = importlib.util.spec_from_file_location('export_delta', EXPORT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_ema_checkpoint_exports_the_chosen_set(run, monkeypatch, capsys):
    tmp, raw = run['tmp'], run['trained']
    ema = {k: v.clone() for k, v in raw.items()}
    for name, idx in run['selection']['indices'].items():
        ema[name].view(-1)[idx.long()] -= 0.5
    ema_state = {'module.' + k: v for k, v in raw.items()}
    ema_state['steps'] = torch.tensor(30)
    run['trained'] = ema  # EMAHook swapped: state_dict holds the EMA set
    ckpt = _training_checkpoint(
        run, str(tmp / 'ema.pth'), ema_state_dict=ema_state)
    proc = run_tool([
        PYTHON, EXPORT, ckpt,
        str(tmp / 'raw.pth'), '--base', run['base_path'], '--weights', 'raw'
    ])
    assert_ok(proc)
    assert "exporting checkpoint['ema_state_dict']: the raw" in proc.stdout
    delta = torch.load(str(tmp / 'raw.pth'), weights_only=True)
    assert delta['meta']['weights'] == 'raw'
    assert_same(apply_delta(run['base'], delta), raw)
    # The default exports checkpoint['state_dict'], the EMA weights.
    tool = _load_tool()
    monkeypatch.setattr(
        sys, 'argv',
        [EXPORT, ckpt,
         str(tmp / 'ema_delta.pth'), '--base', run['base_path']])
    tool.main()
    assert "checkpoint['state_dict']: the EMA weights" in \
        capsys.readouterr().out
    delta = torch.load(str(tmp / 'ema_delta.pth'), weights_only=True)
    assert delta['meta']['weights'] == 'ema'
    assert_same(apply_delta(run['base'], delta), ema)


def test_cli_without_selection_needs_the_base_and_reads_the_changes(
        run, monkeypatch, capsys):
    path = str(run['tmp'] / 'plain.pth')
    torch.save(dict(meta={}, state_dict=run['trained']), path)
    monkeypatch.setattr(sys, 'argv', [EXPORT, path, path + '.delta'])
    with pytest.raises(SystemExit, match='no selection record.*give --base'):
        _load_tool().main()
    # With the base, the delta holds exactly the entries that differ.
    monkeypatch.setattr(
        sys, 'argv', [EXPORT, path, path + '.delta', '--base',
                      run['base_path']])
    _load_tool().main()
    assert 'the entries that differ from the base' in capsys.readouterr().out
    delta = torch.load(path + '.delta', weights_only=True)
    assert_same(apply_delta(run['base'], delta), run['trained'])
    changed = sum(
        int((run['trained'][n] != run['base'][n]).sum())
        for n in run['base'] if n in delta['delta']['sparse'])
    assert delta['meta']['num_sparse_entries'] == changed > 0


def test_non_floating_state_such_as_token_blocks_travels_in_the_delta():
    """The co-selection mask is not trained but must survive a delta."""
    import mmtrpts.checkpoints.delta as delta_lib
    state = {
        'backbone.w': torch.ones(2, 3),
        'backbone.keep_layer_mask': torch.tensor([False, True]),
        'head.b': torch.zeros(2)
    }
    base = {'backbone.w': torch.ones(2, 3)}
    selection = dict(
        indices={'backbone.w': torch.tensor([1])}, full=['head.b'])
    selection['checksum'] = selection_checksum(selection['indices'])
    state['backbone.w'].view(-1)[1] = 5.
    delta = delta_lib.make_delta(state, selection, base_state_dict=base)
    assert torch.equal(delta['delta']['dense']['backbone.keep_layer_mask'],
                       torch.tensor([False, True]))
    merged = delta_lib.apply_delta(base, delta)
    for name, value in state.items():
        assert torch.equal(merged[name], value), name


def test_delta_on_another_base_of_the_same_shapes_is_refused(run):
    delta, path = save_delta(run)
    assert len(delta['meta']['base_digest']) == 64
    other = {k: v + 1e-3 if v.is_floating_point() else v
             for k, v in run['base'].items()}
    with pytest.raises(ValueError, match='made on another base checkpoint'):
        apply_delta(other, delta)
    forced = apply_delta(other, delta, force=True)  # applied as asked
    for name, entry in delta['delta']['sparse'].items():
        idx = entry['indices'].long()
        assert torch.equal(forced[name].view(-1)[idx], entry['values'])
        assert torch.equal(forced[name].view(-1)[:idx[0]],
                           other[name].view(-1)[:idx[0]])
    # Through mmengine's loader (load_from / get_model) and the tool.
    other_path = str(run['tmp'] / 'other.pth')
    torch.save(dict(meta={}, state_dict=other), other_path)
    moved = dict(delta, meta=dict(delta['meta'], base_checkpoint=other_path))
    moved_path = str(run['tmp'] / 'moved.pth')
    torch.save(moved, moved_path)
    with pytest.raises(ValueError, match='made on another base checkpoint'):
        load_checkpoint(build_model(), moved_path)
    out = str(run['tmp'] / 'dense.pth')
    proc = run_tool([PYTHON, MERGE, 'delta', path, out, '--base', other_path])
    assert proc.returncode != 0 and 'made on another base' in proc.stderr
    assert_ok(run_tool([PYTHON, MERGE, 'delta', path, out, '--base',
                        other_path, '--force']))
