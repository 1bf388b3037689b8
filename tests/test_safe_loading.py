"""Loading a checkpoint never executes code in it (issue: security).

A planted ``.pth`` whose pickle runs a shell command is refused on every
path through which mmtrpts (or MMEngine with mmtrpts imported) reads a
local file; the command never runs.  Runner checkpoints still load, and a
file the user names as trusted is fully unpickled.
"""
import fractions
import os
import os.path as osp

import pytest
import torch
from conftest import PYTHON, REPO, run_tool
from mmengine.config import Config
from mmengine.runner.checkpoint import _load_checkpoint, load_checkpoint
from mmpretrain.apis import get_model
from mmpretrain.registry import MODELS

from mmtrpts.checkpoints import make_delta
from mmtrpts.checkpoints.io import (TRUST_ENV, CheckpointLoadError,
                                    load_checkpoint_file, trust_checkpoint)

TOOLS = osp.join(REPO, 'tools', 'model_converters')
VIT = dict(type='VisionTransformer', arch=dict(
    embed_dims=16, num_layers=1, num_heads=2, feedforward_channels=32),
           img_size=16, patch_size=8)


class _RunsACommand:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


@pytest.fixture
def planted(tmp_path):
    """A checkpoint with real weights whose meta runs a command."""
    marker = str(tmp_path / 'PWNED')
    model = MODELS.build(dict(type='ImageClassifier', backbone=VIT))
    path = str(tmp_path / 'downloaded.pth')
    torch.save(dict(meta=dict(note=_RunsACommand(marker)),
                    state_dict=model.state_dict()), path)
    return path, marker


def _refused(call, marker):
    with pytest.raises(CheckpointLoadError, match='refused to load'):
        call()
    assert not osp.exists(marker), 'the planted command ran'


def test_every_load_path_refuses_the_planted_file(planted, tmp_path):
    path, marker = planted
    model = MODELS.build(dict(type='ImageClassifier', backbone=VIT))
    _refused(lambda: load_checkpoint(model, path), marker)  # load_from
    _refused(lambda: _load_checkpoint(path), marker)  # --resume
    _refused(lambda: load_checkpoint_file(path), marker)  # tools
    pretrained = MODELS.build(dict(
        type='ImageClassifier', backbone=dict(VIT, init_cfg=dict(
            type='Pretrained', checkpoint=path, prefix='backbone.'))))
    _refused(pretrained.init_weights, marker)  # init_cfg Pretrained
    cfg = Config(dict(model=dict(type='ImageClassifier', backbone=VIT)))
    _refused(lambda: get_model(cfg, pretrained=path), marker)
    # A delta whose base is the planted file.
    base_state = model.state_dict()
    delta = make_delta(base_state, dict(indices={}, full=['backbone.ln1.bias']),
                       base_checkpoint=path)
    delta_path = str(tmp_path / 'delta.pth')
    torch.save(delta, delta_path)
    _refused(lambda: load_checkpoint(model, delta_path), marker)


@pytest.mark.parametrize('argv', [
    ['export_delta.py', '{path}', '{out}'],
    ['merge.py', 'rlrr', '{path}', '{out}'],
    ['merge.py', 'delta', '{delta}', '{out}', '--base', '{path}'],
])
def test_tools_refuse_the_planted_file(planted, tmp_path, argv):
    path, marker = planted
    delta = str(tmp_path / 'legit_delta.pth')
    torch.save(dict(meta=dict(format='mmtrpts.delta')), delta)
    args = [a.format(path=path, out=str(tmp_path / 'out.pth'), delta=delta)
            for a in argv]
    proc = run_tool([PYTHON, osp.join(TOOLS, args[0]), *args[1:]])
    assert proc.returncode != 0
    assert 'refused to load' in proc.stderr
    assert not osp.exists(marker)


def test_runner_checkpoint_types_load(tmp_path):
    from mmengine.logging import HistoryBuffer
    import numpy as np
    buffer = HistoryBuffer()
    buffer.update(0.25)
    path = str(tmp_path / 'runner.pth')
    torch.save(dict(meta=dict(seed=np.int64(3), ratio=np.float32(0.5)),
                    message_hub=dict(log_scalars=dict(loss=buffer)),
                    state_dict=dict(w=torch.ones(1))), path)
    loaded = load_checkpoint_file(path)
    assert loaded['meta']['seed'] == 3
    assert loaded['message_hub']['log_scalars']['loss'].mean() == 0.25


def test_trusted_file_is_fully_unpickled(tmp_path, monkeypatch):
    path = str(tmp_path / 'custom.pth')
    torch.save(dict(value=fractions.Fraction(1, 3)), path)
    with pytest.raises(CheckpointLoadError, match=TRUST_ENV):
        load_checkpoint_file(path)
    monkeypatch.setenv(TRUST_ENV, path)
    assert load_checkpoint_file(path)['value'] == fractions.Fraction(1, 3)
    monkeypatch.delenv(TRUST_ENV)
    trust_checkpoint(path)
    assert load_checkpoint_file(path)['value'] == fractions.Fraction(1, 3)


@pytest.mark.parametrize('damage', ['truncate', 'garbage'])
def test_corrupt_checkpoint_names_the_file(tmp_path, damage):
    path = str(tmp_path / 'weights.pth')
    torch.save(dict(state_dict=dict(w=torch.ones(1000))), path)
    data = open(path, 'rb').read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2] if damage == 'truncate' else
                b'not a checkpoint at all')
    with pytest.raises(CheckpointLoadError,
                       match=r'weights\.pth is not a readable PyTorch '
                       r'checkpoint \(corrupt or truncated\?\)'):
        load_checkpoint_file(path)
