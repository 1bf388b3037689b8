"""The model zoo: metafile, model index and offline ``get_model``."""
import glob
import os.path as osp

import pytest
import torch
import yaml
from conftest import REPO
from mmpretrain import get_model, list_models

from mmtrpts.apis import register_model_zoo
from mmtrpts.checkpoints import make_delta
from mmtrpts.results.metafile import metafile_entry
from mmtrpts.selection.record import selection_checksum

METAFILE = osp.join(REPO, 'configs', 'trpts', 'metafile.yml')
CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs', 'trpts', 'vit-b_*.py')))
# get_model keyword overrides: DeiT-tiny's arch, 32 px patches, 64 px input.
TINY = dict(
    backbone=dict(arch='deit-tiny', patch_size=32, img_size=64, init_cfg=None),
    head=dict(in_channels=192))


def _metafile():
    with open(METAFILE) as f:
        return yaml.safe_load(f)


def test_metafile_lists_every_config_once_and_is_indexed():
    models = _metafile()['Models']
    assert sorted(m['Config'] for m in models) == sorted(
        osp.relpath(c, REPO) for c in CONFIGS)
    assert len(CONFIGS) == 24
    for entry in models:
        config = osp.splitext(osp.basename(entry['Config']))[0]
        assert entry['Name'] == f'trpts_{config}'
        # Nothing pretends to be a result.
        assert 'Results' not in entry and 'Weights' not in entry
    with open(osp.join(REPO, 'model-index.yml')) as f:
        assert yaml.safe_load(f) == {'Import': ['configs/trpts/metafile.yml']}
    assert sorted(list_models('trpts_*')) == sorted(m['Name'] for m in models)


def test_metafile_entry_matches_the_config():
    entry = next(m for m in _metafile()['Models']
                 if m['Name'] == 'trpts_vit-b_cub')
    fresh = metafile_entry(
        osp.join(REPO, entry['Config']), entry['Name'], 'TR-PTS',
        'CUB-200-2011', REPO)
    assert fresh == entry
    meta = entry['Metadata']
    # ViT-B/16 (85,798,656) + a 200-class head.
    assert meta['Parameters'] == 85798656 + 768 * 200 + 200
    low, high = meta['FLOPs range']
    assert low < high == meta['FLOPs'] < 17582 * 10**6  # < dense ViT-B/16
    assert meta['Trainable budget'] == 0.006


def test_register_model_zoo_is_idempotent_and_names_a_missing_index(tmp_path):
    assert register_model_zoo() is True
    assert register_model_zoo() is True
    missing = str(tmp_path / 'model-index.yml')
    with pytest.raises(FileNotFoundError, match='model index not found'):
        register_model_zoo(missing)


def test_get_model_loads_a_local_delta_offline(tmp_path):
    torch.manual_seed(0)
    model = get_model('trpts_vit-b_cub', **TINY)
    model.init_weights()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    base = {k: v for k, v in start.items() if k.startswith('backbone.')}
    base_path = str(tmp_path / 'base.pth')
    torch.save(dict(meta=dict(), state_dict=base), base_path)

    trained = {k: v.clone() for k, v in start.items()}
    qkv = 'backbone.layers.0.attn.qkv.weight'
    indices = {qkv: torch.tensor([0, 5, 77], dtype=torch.int32)}
    trained[qkv].view(-1)[indices[qkv].long()] += 1.0
    full = sorted(n for n in trained if n.startswith('head.'))
    for name in full:
        trained[name] += 0.5
    trained['backbone.keep_layer_mask'][[2, 5, 8]] = True
    selection = dict(
        format='mmtrpts.selection',
        version=1,
        indices=indices,
        full=full,
        checksum=selection_checksum(indices),
        shapes={qkv: list(trained[qkv].shape)})
    delta_path = str(tmp_path / 'cub_delta.pth')
    torch.save(
        make_delta(
            trained,
            selection,
            base_state_dict=base,
            base_checkpoint=base_path), delta_path)

    loaded = get_model('trpts_vit-b_cub', pretrained=delta_path, **TINY)
    state = loaded.state_dict()
    assert sorted(state) == sorted(trained)
    for name, value in trained.items():
        assert torch.equal(state[name], value), name
    assert loaded.backbone.keep_layers == [2, 5, 8]
    assert loaded.head.fc.out_features == 200
