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
from mmtrpts.datasets.synthetic.mini_vtab import write_task
from mmtrpts.datasets.synthetic.tasks import (IMG_SIZE, SOURCE_TASK,
                                              TARGET_TASKS, generate,
                                              shape_mask)

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


def test_counting_draws_label_plus_one_objects():
    rng = np.random.default_rng(0)
    for label in range(TARGET_TASKS['counting'].num_classes):
        img = TARGET_TASKS['counting'].render(rng, label)
        assert img.shape == (IMG_SIZE, IMG_SIZE, 3)
    with pytest.raises(ValueError, match="unknown shape 'hexagon'"):
        shape_mask('hexagon', 5, 5, 2)


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
        num_train=1536, num_val=480, epochs=3, batch_size=64, warmup_iters=10)
    pretrain_backbone(TINY_BACKBONE, out, recipe=recipe, progress=False)
    checkpoint = torch.load(out, weights_only=True)
    assert set(checkpoint) == {'meta', 'state_dict'}
    assert all(k.startswith('backbone.') for k in checkpoint['state_dict'])
    # 24 classes: chance is 4.2%.
    assert checkpoint['meta']['source_val_top1'] > 0.12
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
