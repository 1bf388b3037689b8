"""Token keep/fuse visualisation: patch states and tools/visualize_tokens."""
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from conftest import PYTHON, REPO, assert_ok, run_tool
from mmpretrain.registry import MODELS

from mmtrpts.apis.token_inspection import (TokenInspectionError,
                                           configure_backbone)
from mmtrpts.visualization.token_selection import (DROPPED, FUSED, KEPT,
                                                   draw_token_grid,
                                                   patch_states, render_states)

TOOL = osp.join(REPO, 'tools', 'visualize_tokens.py')
K, F, D = KEPT, FUSED, DROPPED


def test_patch_states_kept_fused_and_earlier_fused_tokens():
    # 2x3 grid, [CLS] at 0.  Block a keeps 4 candidates (tokens 1-4) and
    # fuses patches 1 and 4 into token 5.  Block b keeps three of those
    # five tokens -- including the earlier fused one (now token 3) -- and
    # fuses patches 2 and 5 into its own fused token 4.
    records = [
        dict(
            layer=2,
            num_tokens=6,
            assignment=torch.tensor([[1, 5, 2, 3, 5, 4], [5, 1, 2, 3, 4, 5]])),
        dict(
            layer=4,
            num_tokens=5,
            assignment=torch.tensor([[1, 3, 4, 2, 3, 4], [4, 1, 2, 3, 3, 4]])),
    ]
    states = patch_states(records, (2, 3), fuse='norm')
    assert len(states) == 2
    assert all(s.shape == (2, 2, 3) for s in states)
    np.testing.assert_array_equal(
        states[0], [[[K, F, K], [K, F, K]], [[F, K, K], [K, K, F]]])
    np.testing.assert_array_equal(
        states[1], [[[K, F, F], [K, F, F]], [[F, K, K], [F, F, F]]])


def test_patch_states_drop_mode():
    # No fused token: the last token is an ordinary kept one.
    records = [
        dict(
            layer=0, num_tokens=5, assignment=np.array([[1, -1, 2, -1, 3, 4]]))
    ]
    (state, ) = patch_states(records, (3, 2), fuse='drop')
    np.testing.assert_array_equal(state, [[[K, D], [K, D], [K, K]]])


def test_patch_states_checks_the_grid():
    records = [
        dict(layer=0, num_tokens=3, assignment=torch.tensor([[1, 2, 2, 1]]))
    ]
    with pytest.raises(ValueError, match='2x3 patch grid'):
        patch_states(records, (2, 3), fuse='norm')


def test_render_and_draw(tmp_path):
    image = np.full((4, 4, 3), 200, dtype=np.uint8)
    state = np.array([[K, F], [D, K]])
    out = render_states(image, state, 2)
    np.testing.assert_allclose(out[:2, :2], 200 / 255)  # kept: unchanged
    assert out[0, 3, 2] > out[0, 3, 0]  # fused: blue tint
    assert (out[3, 0] == 0).all()  # dropped: black
    path = str(tmp_path / 'grid.png')
    draw_token_grid([image], [state[None]], [3],
                    2,
                    path,
                    titles=['a'],
                    num_tokens=[3])
    assert cv2.imread(path) is not None


def test_tool_writes_grid_and_reports_token_counts(tiny_run, tmp_path):
    config, checkpoint = tiny_run['select']
    out = str(tmp_path / 'vis' / 'tokens.png')
    proc = run_tool([
        PYTHON, TOOL, config, checkpoint, *tiny_run['images'], '--out', out,
        '--device', 'cpu'
    ])
    assert_ok(proc)
    # 64 patches + [CLS]; block 1 keeps floor(0.7 * 64) = 44 plus the
    # fused token, block 3 keeps floor(0.7 * 45) = 31 plus a fused token.
    assert 'block 1: 65 -> 46 tokens' in proc.stdout
    assert 'block 3: 46 -> 33 tokens' in proc.stdout
    assert 'patches per image: 44 kept, 20 fused, 0 dropped' in proc.stdout
    image = cv2.imread(out)
    assert image is not None
    # 2 rows x (input + 2 blocks) panels of 2 in at 100 dpi (+ titles and
    # legend: 0.5 in per row, 0.4 in below).
    assert image.shape[:2] == (2 * 250 + 40, 3 * 200)


def test_tool_overrides_keep_layers_and_rate(tiny_run, tmp_path):
    config, checkpoint = tiny_run['plain']
    out = str(tmp_path / 'tokens.png')
    proc = run_tool([
        PYTHON, TOOL, config, checkpoint, tiny_run['images'][0], '--out', out,
        '--device', 'cpu', '--keep-layers', '0', '--keep-rate', '0.5',
        '--cfg-options', 'model.backbone.fuse=drop'
    ])
    assert_ok(proc)
    assert 'block 0: 65 -> 33 tokens' in proc.stdout
    assert '32 kept, 0 fused, 32 dropped' in proc.stdout
    assert cv2.imread(out).shape[:2] == (290, 2 * 200)


def test_tool_without_selection_blocks_fails_clearly(tiny_run, tmp_path):
    config, checkpoint = tiny_run['plain']
    out = str(tmp_path / 'tokens.png')
    proc = run_tool([
        PYTHON, TOOL, config, checkpoint, tiny_run['images'][0], '--out', out
    ])
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert 'has no selection blocks' in proc.stderr
    assert config in proc.stderr
    assert '--keep-layers' in proc.stderr
    assert 'model.backbone.keep_layers' in proc.stderr
    assert not osp.exists(out)


def test_plain_vit_backbone_is_rejected():
    model = MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=dict(
                type='VisionTransformer',
                arch=dict(
                    embed_dims=32,
                    num_layers=2,
                    num_heads=2,
                    feedforward_channels=64),
                img_size=32,
                patch_size=4),
            head=dict(type='LinearClsHead', num_classes=2, in_channels=32)))
    with pytest.raises(
            TokenInspectionError,
            match='is VisionTransformer, not TokenKeepFuseViT'):
        configure_backbone(model, 'my_config.py', [1])
