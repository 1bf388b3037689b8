"""Object faithfulness of token fusing and the token inspection API."""
import os.path as osp

import cv2
import numpy as np
import pytest
from conftest import PYTHON, REPO, assert_ok, run_tool
from mmengine.config import Config

from mmtrpts.apis import (TokenInspectionError, draw_inspection,
                          draw_tokens_with_faithfulness, inspect_tokens,
                          token_faithfulness, token_report)
from mmtrpts.visualization import (FusedObjectShare, draw_token_grid,
                                   fused_object_share)
from mmtrpts.visualization.token_selection import DROPPED, FUSED, KEPT

TOOL = osp.join(REPO, 'tools', 'visualize_tokens.py')


def _state(fused=(), dropped=()) -> np.ndarray:
    """A 4x4 grid of codes: KEPT but for the given (row, col) patches."""
    state = np.full((4, 4), KEPT)
    for patch in fused:
        state[patch] = FUSED
    for patch in dropped:
        state[patch] = DROPPED
    return state


@pytest.fixture
def two_images():
    """Two 16x16 masks (4x4 patches of 4x4 pixels) and their states.

    Image a: the object covers patches (0, 0) and (0, 1) and the top half
    of (1, 0) -- coverage 2.5 patches; fused are (0, 0), (1, 0), (3, 3)
    (coverage 1.5) and the on-object patch (0, 1) is dropped.  Image b:
    the object covers patch (3, 3) and one pixel column of (2, 3) --
    coverage 1.25; fused are (3, 3), (2, 3), (0, 0), (1, 1) (coverage
    1.25).
    """
    masks = np.zeros((2, 16, 16), dtype=bool)
    masks[0, :4, :8] = True
    masks[0, 4:6, :4] = True
    masks[1, 12:, 12:] = True
    masks[1, 8:12, 12] = True
    states = np.stack([
        _state(fused=[(0, 0), (1, 0), (3, 3)], dropped=[(0, 1)]),
        _state(fused=[(3, 3), (2, 3), (0, 0), (1, 1)]),
    ])
    return states, masks


def test_fused_object_share_pools_coverage_over_images(two_images):
    states, masks = two_images
    share = fused_object_share(states, masks, 4)
    # pooled over the 7 fused patches, not a mean of per-image shares
    # (1.5 / 3 and 1.25 / 4 would average to 0.40625)
    assert share.fused_on_object == pytest.approx(2.75 / 7)
    assert share.object_area == pytest.approx(3.75 / 32)
    assert share.ratio == pytest.approx((2.75 / 7) / (3.75 / 32))
    assert (share.num_fused, share.num_images) == (7, 2)
    assert share == fused_object_share(states, masks, (4, 4))
    assert str(share) == ('39.3% of fused patches on the object vs 11.7% '
                          'object area (random): 3.35x')


def test_fused_object_share_faithful_and_adversarial(two_images):
    _, masks = two_images
    background = np.stack([_state(fused=[(3, 0), (2, 2)])] * 2)
    faithful = fused_object_share(background, masks, 4)
    assert faithful.fused_on_object == 0 and faithful.ratio == 0
    on_object = np.stack([_state(fused=[(0, 0), (0, 1)]), _state()])
    adversarial = fused_object_share(on_object, masks, 4)
    assert adversarial.fused_on_object == 1
    assert adversarial.ratio == pytest.approx(1 / (3.75 / 32))
    assert adversarial.ratio > 1


@pytest.mark.parametrize(
    'change, message',
    [(lambda s, m: (s[0], m), r'state has shape \(4, 4\); expected \[B'),
     (lambda s, m: (s, m.astype(np.uint8)), r'masks are uint8 .*expected '
      r'bool \[B, H, W\]'),
     (lambda s, m: (s, m[:1]), '1 masks for the 2 images'),
     (lambda s, m: (s, np.zeros((2, 18, 16), bool)),
      '18x16 pixels are not a multiple of the 4x4 patch size'),
     (lambda s, m: (s, np.zeros((2, 20, 16), bool)),
      r'make a 5x4 grid .* state has a 4x4 grid \(expected masks of 16x16'),
     (lambda s, m: (np.full_like(s, KEPT), m), 'no patch is fused'),
     (lambda s, m: (s, np.zeros_like(m)), 'no mask has an object pixel')])
def test_fused_object_share_errors(two_images, change, message):
    states, masks = change(*two_images)
    with pytest.raises(ValueError, match=message):
        fused_object_share(states, masks, 4)


def _yellow_pixels(path: str) -> int:
    """Pixels of the object outline's colour in a PNG."""
    bgr = cv2.imread(path).astype(int)
    return int(
        ((bgr[..., 2] > 200) & (bgr[..., 1] > 150) & (bgr[..., 0] < 90)).sum())


def test_draw_with_and_without_object_masks(two_images, tmp_path):
    states, masks = two_images
    images = np.full((2, 16, 16, 3), 200, dtype=np.uint8)
    plain = str(tmp_path / 'plain.png')
    draw_token_grid(images, [states], [3], 4, plain)
    outlined = str(tmp_path / 'outlined.png')
    draw_token_grid(
        images, [states], [3],
        4,
        outlined,
        object_masks=masks,
        subtitle=str(fused_object_share(states, masks, 4)))
    assert _yellow_pixels(plain) == 0
    assert _yellow_pixels(outlined) > 0
    # the 79-character subtitle wraps to two lines on the 4 in wide figure
    # (56 characters a line): 0.15 in a line and 0.15 in, at 100 dpi
    assert cv2.imread(outlined).shape[0] == cv2.imread(plain).shape[0] + 45
    short = str(tmp_path / 'short.png')
    draw_token_grid(images, [states], [3], 4, short, subtitle='one line')
    assert cv2.imread(short).shape[0] == cv2.imread(plain).shape[0] + 30
    with pytest.raises(ValueError, match=r'expected \[2, H, W\]'):
        draw_token_grid(images, [states], [3], 4, plain, object_masks=masks[0])
    with pytest.raises(ValueError, match='expected masks at the shown'):
        draw_token_grid(
            images, [states], [3], 4, plain, object_masks=masks[:, :8])


def test_inspect_tokens_batches_and_scores(tiny_run, tmp_path):
    config, checkpoint = tiny_run['select']
    inspection = inspect_tokens(config, checkpoint, tiny_run['images'])
    assert inspection.layers == [1, 3]
    assert inspection.num_tokens == [46, 33]
    assert inspection.patch_size == (4, 4)
    assert inspection.patch_resolution == (8, 8)
    assert [s.shape for s in inspection.states] == [(2, 8, 8)] * 2
    assert all(image.shape == (32, 32, 3) for image in inspection.images)
    assert len(inspection.predictions) == 2
    assert all(p.startswith('pred ') for p in inspection.predictions)
    assert token_report(inspection)[1] == (
        'block 1: 65 -> 46 tokens; patches per image: 44 kept, 20 fused, '
        '0 dropped')
    # one image per forward gives the same states
    one_by_one = inspect_tokens(
        config, checkpoint, tiny_run['images'], batch_size=1)
    for batched, single in zip(inspection.states, one_by_one.states):
        np.testing.assert_array_equal(batched, single)

    masks_file = str(tmp_path / 'masks.npy')
    np.save(masks_file, tiny_run['masks'])
    masks = np.load(masks_file)
    share = token_faithfulness(inspection, masks)
    assert share == fused_object_share(inspection.states[-1],
                                       tiny_run['masks'], 4)
    assert share.num_images == 2
    assert share.num_fused == int((inspection.states[-1] == FUSED).sum())

    out = str(tmp_path / 'new' / 'tokens.png')
    drawn = draw_tokens_with_faithfulness(inspection, masks, out, num_images=1)
    assert isinstance(drawn, FusedObjectShare) and drawn == share
    # one row of (input + 2 blocks) and a subtitle of two lines
    assert cv2.imread(out).shape[:2] == (250 + 40 + 45, 3 * 200)
    draw_inspection(inspection, out)
    assert cv2.imread(out).shape[:2] == (2 * 250 + 40, 3 * 200)
    with pytest.raises(
            TokenInspectionError, match=r'expected bool \[2, H, W\]'):
        token_faithfulness(inspection, masks[:1])


def test_masks_follow_a_resizing_pipeline(tiny_run, tmp_path):
    # a 64x64 image is resized to 32x32 by the test pipeline; its mask
    # too (nearest: every second pixel)
    image = cv2.resize(
        cv2.imread(tiny_run['images'][0]), (64, 64),
        interpolation=cv2.INTER_NEAREST)
    path = str(tmp_path / 'large.png')
    cv2.imwrite(path, image)
    large_mask = np.repeat(np.repeat(tiny_run['masks'][:1], 2, 1), 2, 2)
    config, checkpoint = tiny_run['select']
    inspection = inspect_tokens(config, checkpoint, [path])
    assert inspection.images[0].shape == (32, 32, 3)
    share = token_faithfulness(inspection, large_mask)
    assert share == fused_object_share(inspection.states[-1],
                                       tiny_run['masks'][:1], 4)


def test_inspect_tokens_errors(tiny_run, tmp_path):
    config, checkpoint = tiny_run['select']
    with pytest.raises(
            TokenInspectionError, match='no selection block '
            'reduced tokens'):
        inspect_tokens(config, checkpoint, tiny_run['images'], keep_rate=1.0)
    with pytest.raises(TokenInspectionError, match='no image files'):
        inspect_tokens(config, checkpoint, [])
    # without a resize, images of two sizes cannot share a batch; a loaded
    # config is not changed by cfg_options
    large = str(tmp_path / 'large.png')
    cv2.imwrite(large, np.zeros((40, 40, 3), np.uint8))
    cfg = Config.fromfile(config)
    no_resize = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
    with pytest.raises(
            TokenInspectionError, match='use a test pipeline that resizes'):
        inspect_tokens(
            cfg,
            checkpoint, [tiny_run['images'][0], large],
            batch_size=1,
            cfg_options={'test_dataloader.dataset.pipeline': no_resize})
    assert len(cfg.test_dataloader.dataset.pipeline) == 3
    inspection = inspect_tokens(config, checkpoint, tiny_run['images'][:1])
    with pytest.raises(TokenInspectionError, match='no mask has an object'):
        token_faithfulness(inspection, np.zeros((1, 32, 32), bool))


def test_tool_outlines_objects_and_reports_faithfulness(tiny_run, tmp_path):
    config, checkpoint = tiny_run['select']
    masks = str(tmp_path / 'masks.npy')
    np.save(masks, tiny_run['masks'])
    out = str(tmp_path / 'tokens.png')
    proc = run_tool([
        PYTHON, TOOL, config, checkpoint, *tiny_run['images'], '--out', out,
        '--device', 'cpu', '--masks', masks
    ])
    assert_ok(proc)
    assert 'block 3: 46 -> 33 tokens' in proc.stdout
    assert 'object faithfulness after block 3: ' in proc.stdout
    assert '% of fused patches on the object vs ' in proc.stdout
    assert cv2.imread(out).shape[:2] == (2 * 250 + 40 + 45, 3 * 200)
    np.save(masks, tiny_run['masks'][:1])
    proc = run_tool([
        PYTHON, TOOL, config, checkpoint, *tiny_run['images'], '--out', out,
        '--device', 'cpu', '--masks', masks
    ])
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert 'expected bool [2, H, W]' in proc.stderr
