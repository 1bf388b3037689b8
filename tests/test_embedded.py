"""The generated mini-benchmark, the embedded pre-training and the table."""
import os
import os.path as osp
import re

import numpy as np
import pytest
import torch

from mmtrpts.apis.demo import format_table
from mmtrpts.apis.embedded_backbone import pretrain_backbone
from mmtrpts.datasets import VTAB1k
from mmtrpts.apis.embedded_backbone import object_share_per_patch
from mmtrpts.datasets.synthetic.mini_vtab import load_object_masks, write_task
from mmtrpts.models.backbones.token_keep_fuse_vit import TokenKeepFuseViT
from mmtrpts.datasets.synthetic.tasks import (IMG_SIZE, SOURCE_TASK,
                                              TARGET_TASKS, generate,
                                              position_labels, shape_mask)

TINY_BACKBONE = dict(
    type='VisionTransformer',
    arch=dict(
        embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64),
    img_size=32,
    patch_size=4,
    init_cfg=dict(type='Pretrained', checkpoint='ignored'))


@pytest.mark.parametrize(
    'task', list(TARGET_TASKS.values()) + [SOURCE_TASK], ids=lambda t: t.name)
def test_generate_is_deterministic_balanced_and_varied(task):
    images, labels = generate(task, 2 * task.num_classes, seed=7)
    again, again_labels = generate(task, 2 * task.num_classes, seed=7)
    other, _ = generate(task, 2 * task.num_classes, seed=8)
    assert images.shape == (2 * task.num_classes, IMG_SIZE, IMG_SIZE, 3)
    assert images.dtype == np.uint8 and labels.dtype == np.int64
    assert np.array_equal(images, again) and np.array_equal(
        labels, again_labels)
    assert not np.array_equal(images, other)
    assert np.bincount(labels).tolist() == [2] * task.num_classes


def _components(mask):
    """Number of 8-connected components of a boolean mask."""
    seen = np.zeros_like(mask)
    count = 0
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        count += 1
        stack = [(y, x)]
        seen[y, x] = True
        while stack:
            cy, cx = stack.pop()
            for ny, nx in ((cy + dy, cx + dx) for dy in (-1, 0, 1)
                           for dx in (-1, 0, 1)):
                if (0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1]
                        and mask[ny, nx] and not seen[ny, nx]):
                    seen[ny, nx] = True
                    stack.append((ny, nx))
    return count


def test_counting_draws_label_plus_one_objects():
    rng = np.random.default_rng(0)
    for label in range(TARGET_TASKS['counting'].num_classes):
        img, mask = TARGET_TASKS['counting'].render(rng, label)
        assert img.shape == (IMG_SIZE, IMG_SIZE, 3)
        # the halo keeps objects apart: one mask component per object
        assert _components(mask) == label + 1
    with pytest.raises(ValueError, match="unknown shape 'hexagon'"):
        shape_mask('hexagon', 5, 5, 2)


def test_masks_mark_the_objects_that_carry_the_label():
    images, labels, masks = generate(
        TARGET_TASKS['location'], 32, seed=3, return_masks=True)
    assert masks.dtype == bool and masks.shape == (32, IMG_SIZE, IMG_SIZE)
    for image, label, mask in zip(images, labels, masks):
        centre_x = np.nonzero(mask)[1].mean() + 0.5
        # the object's centre lies in (or, clipped at the border, next to)
        # the label's horizontal bin
        assert abs(centre_x // (IMG_SIZE / 8) - label) <= 1
        # painted in one colour that differs from the background around it
        inside = image[mask].astype(float)
        assert np.ptp(inside, axis=0).max() == 0
        assert np.abs(inside.mean(0) - image[~mask].mean(0)).sum() > 50
    _, _, orientation = generate(
        TARGET_TASKS['orientation'], 16, seed=1, return_masks=True)
    assert orientation.any(axis=(1, 2)).all()
    _, _, texture = generate(TARGET_TASKS['texture'], 6, seed=1,
                             return_masks=True)
    assert not TARGET_TASKS['texture'].has_objects and not texture.any()


def test_position_labels_and_object_share_on_constructed_masks():
    masks = np.zeros((3, 8, 8), bool)
    masks[0, 0:2, 0:2] = True  # top-left cell
    masks[1, 6:8, 4:6] = True  # bottom row, third of four columns
    masks[2, 3:5, 3:5] = True  # centroid (4, 4): bottom-right of 2x2
    assert position_labels(masks, 4).tolist() == [0, 14, 10]
    assert position_labels(masks, 2).tolist() == [0, 3, 3]
    coverage = object_share_per_patch(masks, (2, 2))  # 4x4-pixel patches
    assert coverage.shape == (3, 4)
    assert np.allclose(coverage.sum(1), 1)
    assert coverage[0].tolist() == [1, 0, 0, 0]
    assert coverage[1].tolist() == [0, 0, 0, 1]
    assert np.allclose(coverage[2], 0.25)
    with pytest.raises(ValueError, match='at least one object pixel'):
        position_labels(np.zeros((1, 8, 8), bool), 4)


def test_object_masks_are_written_for_the_test_split(tmp_path):
    sizes = dict(train800=8, val200=4, test=8)
    task_dir = write_task(str(tmp_path), 'location', sizes=sizes, seed=2)
    masks = load_object_masks(task_dir)
    _, _, expected = generate(TARGET_TASKS['location'], 8, 2 * 1000 + 2,
                              return_masks=True)
    assert np.array_equal(masks, expected)
    np.save(osp.join(task_dir, 'masks', 'test.npy'), masks[:5])
    with pytest.raises(ValueError, match=r'one mask per line of test\.txt'):
        load_object_masks(task_dir)
    with pytest.raises(FileNotFoundError, match='masks/train800.npy'):
        load_object_masks(task_dir, 'train800')


def test_write_task_produces_the_vtab_layout(tmp_path):
    sizes = dict(train800=12, val200=4, test=8)
    task_dir = write_task(str(tmp_path), 'orientation', sizes=sizes, seed=3)
    counts = {}
    for split in ('train800', 'val200', 'train800val200', 'test'):
        with open(osp.join(task_dir, f'{split}.txt')) as f:
            lines = f.read().splitlines()
        counts[split] = len(lines)
        for i, line in enumerate(lines):
            assert re.fullmatch(rf'images/{split}/{i:06d}\.jpg [0-7]', line)
            assert osp.isfile(osp.join(task_dir, line.split()[0]))
    assert counts == dict(train800=12, val200=4, train800val200=16, test=8)

    def labels(split):
        with open(osp.join(task_dir, f'{split}.txt')) as f:
            return [line.split()[1] for line in f]

    assert labels('train800val200') == labels('train800') + labels('val200')
    dataset = VTAB1k(str(tmp_path), 'orientation', split='test', num_classes=8)
    assert len(dataset) == 8
    assert dataset.get_data_info(0)['img_path'] == osp.join(
        task_dir, 'images', 'test', '000000.jpg')


def test_write_task_reuses_an_identical_benchmark(tmp_path):
    sizes = dict(train800=6, val200=2, test=6)
    task_dir = write_task(str(tmp_path), 'texture', sizes=sizes)
    image = osp.join(task_dir, 'images', 'test', '000000.jpg')
    os.utime(image, (0, 0))
    write_task(str(tmp_path), 'texture', sizes=sizes)
    assert os.stat(image).st_mtime == 0  # cached: not rewritten
    write_task(str(tmp_path), 'texture', sizes=sizes, seed=1)
    assert os.stat(image).st_mtime > 0  # another seed: rewritten
    with pytest.raises(KeyError, match="unknown generated task 'colour'"):
        write_task(str(tmp_path), 'colour')


def test_pretrain_learns_the_source_task_and_caches(tmp_path):
    out = str(tmp_path / 'tiny.pth')
    recipe = dict(
        num_train=1536, num_val=480, epochs=6, batch_size=64, warmup_iters=10,
        position_grid=2)
    pretrain_backbone(TINY_BACKBONE, out, recipe=recipe, progress=False)
    checkpoint = torch.load(out, weights_only=True)
    assert set(checkpoint) == {'meta', 'state_dict'}
    assert all(k.startswith('backbone.') for k in checkpoint['state_dict'])
    # 24 classes: chance is 4.2%; 4 position cells: chance 25%.
    assert checkpoint['meta']['source_val_top1'] > 0.12
    assert checkpoint['meta']['source_val_position_top1'] > 0.4
    # the [CLS] attention concentrates on the object (what the token
    # faithfulness of the demo rests on): the mean attention a patch gets
    # is far higher on the object than off it, in every block
    backbone = TokenKeepFuseViT(**{
        k: v
        for k, v in TINY_BACKBONE.items() if k not in ('type', 'init_cfg')
    })
    backbone.load_state_dict({
        k[len('backbone.'):]: v
        for k, v in checkpoint['state_dict'].items()
    })
    images, _, masks = generate(SOURCE_TASK, 64, seed=11, return_masks=True)
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() - 127.5) / 127.5
    backbone.eval()
    with torch.no_grad():
        _, scores = backbone.forward_with_cls_attention(x)
    on_object = torch.from_numpy(object_share_per_patch(masks, (8, 8)) > 0)
    for block, attention in enumerate(scores):
        ratio = attention[on_object].mean() / attention[~on_object].mean()
        assert ratio > 3, (block, ratio)
    os.utime(out, (0, 0))
    pretrain_backbone(TINY_BACKBONE, out, recipe=recipe, progress=False)
    assert os.stat(out).st_mtime == 0  # same recipe: reused


def test_format_table():
    results = {
        'full fine-tuning': [
            dict(task='a', top1=50.0, trainable=90, total=100, flops=2e9),
            dict(task='b', top1=70.0, trainable=110, total=100, flops=2e9)
        ]
    }
    assert format_table(results, ['a', 'b']).splitlines() == [
        '| method | a | b | mean top-1 | trainable params | trainable % | '
        'GFLOPs |', '|---|---|---|---|---|---|---|',
        '| full fine-tuning | 50.0 | 70.0 | 60.0 | 100 | 100.00 | 2.0000 |'
    ]
