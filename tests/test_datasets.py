"""Tests of the VTAB-1k and FGVC datasets, their metadata and base configs.

All data are tiny files written in the real formats into ``tmp_path``.
"""
import json
import os.path as osp
import re

import mmtrpts  # noqa: F401  (must come first: torchvision shim)

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmpretrain.datasets.categories import (CIFAR100_CATEGORIES,
                                            DTD_CATEGORIES)
from mmpretrain.registry import DATASETS

from mmtrpts.datasets import FGVC, VTAB1k
from mmtrpts.datasets.annotation_io import (AnnotationError,
                                            exception_with_context,
                                            read_label_lines, read_vpt_json)
from mmtrpts.datasets.fgvc_meta import FGVC_DATASETS, resolve_fgvc
from mmtrpts.datasets.vtab_tasks import (VTAB_GROUPS, VTAB_TASKS, find_task,
                                         resolve_task)

CONFIG_DIR = osp.join(
    osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs', '_base_',
    'datasets')

LOAD_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(
        type='Resize',
        scale=(224, 224),
        interpolation='bicubic',
        backend='pillow'),
    dict(type='PackInputs'),
]


# --------------------------------------------------------------- helpers
def write_image(path, height=6, width=8, value=0):
    """Write a tiny jpg (creating its folder)."""
    import os
    os.makedirs(osp.dirname(path), exist_ok=True)
    img = np.full((height, width, 3), value, dtype=np.uint8)
    assert cv2.imwrite(str(path), img)


def write_vtab_split(root, task, split, labels, images=True):
    """Write ``<root>/<task>/<split>.txt`` (+ images); return its path."""
    task_dir = osp.join(str(root), task)
    lines = []
    for i, label in enumerate(labels):
        rel = f'images/{split}/{i:06d}.jpg'
        lines.append(f'{rel} {label}\n')
        if images:
            write_image(osp.join(task_dir, rel), value=10 * i)
    return write_text(osp.join(task_dir, f'{split}.txt'), ''.join(lines))


def write_text(path, text):
    import os
    os.makedirs(osp.dirname(str(path)), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        f.write(text)
    return str(path)


def write_json(path, mapping):
    return write_text(path, json.dumps(mapping))


def line_msg(path, line):
    """Regex that matches '<path>, line <n>:'."""
    return re.escape(f'{path}, line {line}:')


# ------------------------------------------------------ VTAB task table
def test_vtab_table():
    assert len(VTAB_TASKS) == 19
    assert {
        k: len(v)
        for k, v in VTAB_GROUPS.items()
    } == {
        'natural': 7,
        'specialized': 4,
        'structured': 8
    }
    assert {
        k: t.num_classes
        for k, t in VTAB_TASKS.items()
    } == {
        'cifar': 100,
        'caltech101': 102,
        'dtd': 47,
        'oxford_flowers102': 102,
        'oxford_iiit_pet': 37,
        'svhn': 10,
        'sun397': 397,
        'patch_camelyon': 2,
        'eurosat': 10,
        'resisc45': 45,
        'diabetic_retinopathy': 5,
        'clevr_count': 8,
        'clevr_dist': 6,
        'dmlab': 6,
        'kitti': 4,
        'dsprites_loc': 16,
        'dsprites_ori': 16,
        'smallnorb_azi': 18,
        'smallnorb_ele': 9
    }
    assert VTAB_TASKS['dsprites_loc'].test_size == 73728
    assert VTAB_TASKS['kitti'].test_size == 711
    for info in VTAB_TASKS.values():
        assert '_' not in info.token
        if info.classes is not None:
            assert len(info.classes) == info.num_classes
    assert VTAB_TASKS['cifar'].classes == tuple(CIFAR100_CATEGORIES)
    assert VTAB_TASKS['dtd'].classes == tuple(DTD_CATEGORIES)
    assert VTAB_TASKS['svhn'].classes[0] == '0'
    assert VTAB_TASKS['clevr_count'].classes == tuple(
        str(n) for n in range(3, 11))
    assert VTAB_TASKS['patch_camelyon'].classes == ('no tumor', 'tumor')
    assert VTAB_TASKS['eurosat'].classes[9] == 'SeaLake'
    assert VTAB_TASKS['diabetic_retinopathy'].classes[4] == (
        'Proliferative DR')
    assert VTAB_TASKS['sun397'].classes is None


@pytest.mark.parametrize('alias, folder',
                         [('cifar100', 'cifar'), ('CIFAR-100', 'cifar'),
                          ('cifar_100', 'cifar'),
                          ('flowers102', 'oxford_flowers102'),
                          ('oxford_flowers102', 'oxford_flowers102'),
                          ('pets', 'oxford_iiit_pet'),
                          ('camelyon', 'patch_camelyon'),
                          ('retinopathy', 'diabetic_retinopathy'),
                          ('clevr-count', 'clevr_count'),
                          ('clevr_count', 'clevr_count'),
                          ('smallnorb-ele', 'smallnorb_ele'),
                          ('dsprites-loc', 'dsprites_loc')])
def test_vtab_aliases(alias, folder):
    assert resolve_task(alias).folder == folder


def test_vtab_every_token_and_folder_resolves():
    for folder, info in VTAB_TASKS.items():
        assert resolve_task(info.token) is info
        assert resolve_task(folder) is info


def test_vtab_unknown_task_name():
    assert find_task('mnist') is None
    with pytest.raises(
            ValueError,
            match=r"Unknown VTAB-1k task 'mnist'.*"
            r'cifar \(cifar100\).*smallnorb_ele'):
        resolve_task('mnist')


# ---------------------------------------------------------- VTAB parsing
def test_vtab_parses_split(tmp_path):
    ann = write_vtab_split(tmp_path, 'cifar', 'train800val200', [5, 0, 99])
    ds = VTAB1k(data_root=str(tmp_path), task='cifar100')
    assert ds.ann_file == ann
    assert len(ds) == 3
    task_dir = osp.join(str(tmp_path), 'cifar')
    for i, label in enumerate([5, 0, 99]):
        info = ds.get_data_info(i)
        assert info['img_path'] == osp.join(
            task_dir, f'images/train800val200/{i:06d}.jpg')
        assert osp.isabs(info['img_path'])
        assert info['gt_label'] == label
        assert info['ann_line'] == i + 1
    assert ds.metainfo['classes'] == tuple(CIFAR100_CATEGORIES)
    assert ds.metainfo['task'] == 'cifar'
    assert ds.metainfo['task_group'] == 'natural'
    assert ds.metainfo['split'] == 'train800val200'
    assert ds.get_gt_labels().tolist() == [5, 0, 99]


def test_vtab_relative_data_root(tmp_path, monkeypatch):
    write_vtab_split(tmp_path / 'vtab', 'dtd', 'test', [46])
    monkeypatch.chdir(tmp_path)
    ds = VTAB1k(data_root='vtab', task='dtd', split='test')
    assert ds.get_data_info(0)['img_path'] == osp.join(
        str(tmp_path), 'vtab', 'dtd', 'images', 'test', '000000.jpg')


def test_vtab_path_with_space_splits_on_last_space(tmp_path):
    ann = write_text(tmp_path / 'dtd' / 'test.txt', 'images/a b.jpg 3\n')
    ds = VTAB1k(data_root=str(tmp_path), task='dtd', split='test')
    assert ds.get_data_info(0)['img_path'] == osp.join(
        str(tmp_path), 'dtd', 'images/a b.jpg')
    assert ds.get_data_info(0)['gt_label'] == 3
    assert ds.ann_file == ann


def test_vtab_no_final_newline_and_crlf(tmp_path):
    write_text(tmp_path / 'dtd' / 'val200.txt',
               'images/val200/0.jpg 1\r\nimages/val200/1.jpg 2')
    ds = VTAB1k(data_root=str(tmp_path), task='dtd', split='val200')
    assert [ds.get_data_info(i)['gt_label'] for i in range(2)] == [1, 2]


def test_vtab_split_and_split_mode(tmp_path):
    for split, label in [('train800', 1), ('val200', 2), ('train800val200', 3),
                         ('test', 4)]:
        write_vtab_split(tmp_path, 'svhn', split, [label], images=False)

    def first_label(**kwargs):
        ds = VTAB1k(data_root=str(tmp_path), task='svhn', **kwargs)
        return ds.split, ds.get_data_info(0)['gt_label']

    assert first_label() == ('train800val200', 3)
    assert first_label(split='val200') == ('val200', 2)
    assert first_label(split_mode='val') == ('train800', 1)
    assert first_label(split_mode='val', test_mode=True) == ('val200', 2)
    assert first_label(split_mode='test') == ('train800val200', 3)
    assert first_label(split_mode='test', test_mode=True) == ('test', 4)
    with pytest.raises(ValueError, match='either split'):
        first_label(split='test', split_mode='val')
    with pytest.raises(ValueError, match="split must be one of.*'train'"):
        first_label(split='train')
    with pytest.raises(ValueError, match="split_mode must be one of.*'x'"):
        first_label(split_mode='x')


def test_vtab_alias_named_folder_is_found(tmp_path):
    write_vtab_split(tmp_path, 'cifar100', 'test', [7], images=False)
    ds = VTAB1k(data_root=str(tmp_path), task='cifar100', split='test')
    assert ds.task_dir == osp.join(str(tmp_path), 'cifar100')
    assert ds.num_classes == 100


def test_vtab_unknown_task_needs_num_classes(tmp_path):
    write_vtab_split(tmp_path, 'my_task', 'test', [0, 2], images=False)
    with pytest.raises(
            ValueError,
            match="'my_task' is not one of the 19.*"
            'pass num_classes'):
        VTAB1k(data_root=str(tmp_path), task='my_task', split='test')
    ds = VTAB1k(
        data_root=str(tmp_path), task='my_task', split='test', num_classes=3)
    assert ds.metainfo['classes'] == ('0', '1', '2')
    assert ds.metainfo['task'] == 'my_task'
    assert ds.metainfo['task_group'] is None
    assert ds.get_gt_labels().tolist() == [0, 2]


def test_vtab_num_classes_disagrees_with_table(tmp_path):
    write_vtab_split(tmp_path, 'dtd', 'test', [0], images=False)
    with pytest.raises(
            ValueError, match="num_classes=40 disagrees.*'dtd'.*47 classes"):
        VTAB1k(
            data_root=str(tmp_path), task='dtd', split='test', num_classes=40)
    ds = VTAB1k(
        data_root=str(tmp_path), task='dtd', split='test', num_classes=47)
    assert ds.num_classes == 47
    with pytest.raises(ValueError, match='positive integer'):
        VTAB1k(data_root=str(tmp_path), task='dtd', num_classes=0)


def test_vtab_user_classes(tmp_path):
    write_vtab_split(tmp_path, 'kitti', 'test', [3], images=False)
    names = ['a', 'b', 'c', 'd']
    ds = VTAB1k(
        data_root=str(tmp_path), task='kitti', split='test', classes=names)
    assert ds.metainfo['classes'] == tuple(names)
    ds = VTAB1k(
        data_root=str(tmp_path),
        task='kitti',
        split='test',
        metainfo=dict(classes=names))
    assert ds.metainfo['classes'] == tuple(names)
    assert ds.metainfo['task'] == 'kitti'
    with pytest.raises(
            ValueError, match='3 class names given.*'
            'num_classes=4'):
        VTAB1k(
            data_root=str(tmp_path),
            task='kitti',
            split='test',
            classes=['a', 'b', 'c'])


# ------------------------------------------------------- VTAB bad input
def test_vtab_missing_data_root(tmp_path):
    missing = osp.join(str(tmp_path), 'nope')
    with pytest.raises(
            FileNotFoundError,
            match=re.escape(f'data_root not found: {missing}') +
            '.*train800,val200,train800val200,test'):
        VTAB1k(data_root=missing, task='dtd')
    with pytest.raises(ValueError, match='needs data_root'):
        VTAB1k(data_root='', task='dtd')


def test_vtab_missing_task_folder(tmp_path):
    with pytest.raises(
            FileNotFoundError,
            match='task folder not found.*' +
            re.escape(osp.join(str(tmp_path), 'oxford_iiit_pet')) + '.*' +
            re.escape(osp.join(str(tmp_path), 'pets')) +
            '.*Expected the VTAB-1k layout'):
        VTAB1k(data_root=str(tmp_path), task='pets')


def test_vtab_missing_split_file(tmp_path):
    write_vtab_split(tmp_path, 'dtd', 'test', [0], images=False)
    expected = osp.join(str(tmp_path), 'dtd', 'train800val200.txt')
    with pytest.raises(
            FileNotFoundError,
            match=re.escape(f'not found: {expected}') +
            '.*Expected the VTAB-1k layout'):
        VTAB1k(data_root=str(tmp_path), task='dtd')


@pytest.mark.parametrize('text, line, message', [
    ('images/t/0.jpg 1\nimages/t/1.jpg\n', 2, "no space in 'images/t/1.jpg'"),
    ('images/t/0.jpg 1\n 3\n', 2, 'empty image path'),
    ('images/t/0.jpg 1\nimages/t/1.jpg  3\n', 2,
     'leading or trailing whitespace'),
    ('images/t/0.jpg one\n', 1, "label 'one' is not an integer"),
    ('images/t/0.jpg 1.0\n', 1, "label '1.0' is not an integer"),
    ('images/t/0.jpg \n', 1, "label '' is not an integer"),
    ('images/t/0.jpg 1\nimages/t/1.jpg -1\n', 2, 'negative label -1'),
    ('images/t/0.jpg 47\n', 1,
     r'label 47 is out of range; expected 0 <= label < num_classes=47'),
    ('images/t/0.jpg 1\n\nimages/t/1.jpg 2\n', 2, 'empty line'),
    ('images/t/0.jpg 1\n   \nimages/t/1.jpg 2\n', 2, 'empty line'),
    ('images/t/0.jpg 1\nimages/t/1.jpg 2\n\n', 3, 'empty line'),
])
def test_vtab_malformed_lines(tmp_path, text, line, message):
    ann = write_text(tmp_path / 'dtd' / 'test.txt', text)
    with pytest.raises(
            AnnotationError,
            match=line_msg(ann, line) + '.*' + message) as info:
        VTAB1k(data_root=str(tmp_path), task='dtd', split='test')
    assert info.value.path == ann
    assert info.value.line == line


def test_vtab_empty_file(tmp_path):
    ann = write_text(tmp_path / 'dtd' / 'test.txt', '')
    with pytest.raises(
            AnnotationError, match=re.escape(ann) + ': the file is empty'):
        VTAB1k(data_root=str(tmp_path), task='dtd', split='test')


def test_vtab_out_of_range_for_own_task(tmp_path):
    ann = write_vtab_split(tmp_path, 'lab', 'test', [0, 1, 5], images=False)
    with pytest.raises(
            AnnotationError, match=line_msg(ann, 3) + '.*num_classes=5'):
        VTAB1k(
            data_root=str(tmp_path), task='lab', split='test', num_classes=5)


# --------------------------------------------------- VTAB through pipeline
def test_vtab_pipeline_loads_image(tmp_path):
    write_vtab_split(tmp_path, 'eurosat', 'test', [4, 9])
    ds = VTAB1k(
        data_root=str(tmp_path),
        task='eurosat',
        split='test',
        test_mode=True,
        pipeline=LOAD_PIPELINE)
    out = ds[1]
    assert out['inputs'].shape == (3, 224, 224)
    assert out['inputs'].dtype == torch.uint8
    assert out['data_samples'].gt_label.tolist() == [9]
    assert out['data_samples'].img_path == ds.get_data_info(1)['img_path']
    assert out['data_samples'].ori_shape == (6, 8)


@pytest.mark.parametrize('test_mode', [False, True])
def test_vtab_unreadable_image_names_file_and_line(tmp_path, test_mode):
    ann = write_vtab_split(tmp_path, 'dtd', 'test', [0, 1])
    bad = osp.join(str(tmp_path), 'dtd', 'images', 'test', '000001.jpg')
    write_text(bad, 'this is not a jpeg')
    ds = VTAB1k(
        data_root=str(tmp_path),
        task='dtd',
        split='test',
        test_mode=test_mode,
        pipeline=LOAD_PIPELINE)
    assert ds[0]['inputs'].shape == (3, 224, 224)
    # cv2 returns None for undecodable bytes; mmcv's LoadImageFromFile
    # then fails an assert (even with ignore_empty=True).
    with pytest.raises(
            AssertionError,
            match=re.escape(f'image {bad} (listed in {ann}, '
                            'line 2)') + '.*failed to load image'):
        ds[1]


def test_vtab_missing_image_names_file_and_line(tmp_path):
    ann = write_vtab_split(tmp_path, 'dtd', 'test', [0], images=False)
    img = osp.join(str(tmp_path), 'dtd', 'images/test/000000.jpg')
    ds = VTAB1k(
        data_root=str(tmp_path),
        task='dtd',
        split='test',
        pipeline=LOAD_PIPELINE)
    with pytest.raises(
            FileNotFoundError,
            match=re.escape(f'image {img} (listed in {ann}, '
                            'line 1)')):
        ds[0]


# ------------------------------------------------------- annotation_io
def test_read_label_lines_direct(tmp_path):
    path = write_text(tmp_path / 'a.txt', 'x.jpg 0\ny.jpg 2\n')
    assert [tuple(e) for e in read_label_lines(path, 3)] == [('x.jpg', 0, 1),
                                                             ('y.jpg', 2, 2)]
    with pytest.raises(
            FileNotFoundError,
            match=re.escape(str(tmp_path / 'b.txt')) + '. hint'):
        read_label_lines(str(tmp_path / 'b.txt'), hint='hint')


def test_exception_with_context():
    exc = exception_with_context(OSError('boom'), 'ctx')
    assert type(exc) is OSError and str(exc) == 'ctx: OSError: boom'
    exc = exception_with_context(KeyError('k'), 'ctx')
    assert type(exc) is RuntimeError and str(exc) == "ctx: KeyError: 'k'"
    exc = exception_with_context(
        UnicodeDecodeError('utf-8', b'\xff', 0, 1, 'bad'), 'ctx')
    assert type(exc) is RuntimeError and str(exc).startswith('ctx: Unicode')


# ------------------------------------------------------------ FGVC table
def test_fgvc_table():
    assert {
        k: v.num_classes
        for k, v in FGVC_DATASETS.items()
    } == {
        'cub': 200,
        'nabirds': 555,
        'flowers': 102,
        'dogs': 120,
        'cars': 196
    }
    nab = FGVC_DATASETS['nabirds']
    assert (nab.num_train, nab.num_val, nab.num_test) == (21536, 2393, 24633)
    assert FGVC_DATASETS['dogs'].image_subfolder == 'Images'
    assert FGVC_DATASETS['flowers'].rlrr_folder == 'OxfordFlowers'
    assert resolve_fgvc('StanfordDogs').name == 'dogs'
    assert resolve_fgvc('CUB_200_2011').name == 'cub'
    assert resolve_fgvc('oxfordflower').name == 'flowers'
    with pytest.raises(ValueError, match="Unknown FGVC data set 'x'.*cub"):
        resolve_fgvc('x')


# ---------------------------------------------------------- FGVC parsing
def make_fgvc(root, folder, splits, subfolder='', images=True):
    """Write ``<root>/<folder>/<split>.json`` and (optionally) images."""
    base = osp.join(str(root), folder)
    img_dir = osp.join(base, subfolder) if subfolder else base
    import os
    os.makedirs(img_dir, exist_ok=True)
    paths = {}
    for split, mapping in splits.items():
        paths[split] = write_json(osp.join(base, f'{split}.json'), mapping)
        if images:
            for key in mapping:
                write_image(osp.join(img_dir, key))
    return paths


BIRDS = {
    'train': {
        'a/1.jpg': 7,
        'b/2.jpg': 3
    },
    'val': {
        'c/3.jpg': 11
    },
    'test': {
        'a/4.jpg': 11,
        'b/5.jpg': 7
    },
}


def test_fgvc_label_remap_and_trainval_fallback(tmp_path):
    paths = make_fgvc(tmp_path, 'birds', BIRDS, images=False)
    ds = FGVC(data_root=str(tmp_path), dataset='birds', num_classes=3)
    assert ds.ann_files == (paths['train'], paths['val'])
    assert ds.metainfo['label_map'] == {3: 0, 7: 1, 11: 2}
    assert ds.metainfo['classes'] == ('3', '7', '11')
    assert ds.metainfo['split'] == 'trainval'
    infos = [ds.get_data_info(i) for i in range(len(ds))]
    assert [i['gt_label'] for i in infos] == [1, 0, 2]
    assert [i['ann_key'] for i in infos] == ['a/1.jpg', 'b/2.jpg', 'c/3.jpg']
    assert [i['ann_file']
            for i in infos] == [paths['train'], paths['train'], paths['val']]
    assert infos[0]['img_path'] == osp.join(str(tmp_path), 'birds', 'a/1.jpg')
    # The test split gets the same mapping although it lacks id 3.
    test = FGVC(
        data_root=str(tmp_path), dataset='birds', split='test', num_classes=3)
    assert test.get_gt_labels().tolist() == [2, 1]


def test_fgvc_trainval_json_preferred(tmp_path):
    splits = dict(BIRDS, trainval={'c/3.jpg': 11, 'a/1.jpg': 7})
    paths = make_fgvc(tmp_path, 'birds', splits, images=False)
    ds = FGVC(data_root=str(tmp_path), dataset='birds', num_classes=3)
    assert ds.ann_files == (paths['trainval'], )
    assert ds.get_gt_labels().tolist() == [2, 1]


def test_fgvc_unknown_dataset_needs_num_classes(tmp_path):
    make_fgvc(tmp_path, 'birds', BIRDS, images=False)
    with pytest.raises(
            ValueError,
            match="'birds' is not one of the FGVC.*"
            'pass num_classes'):
        FGVC(data_root=str(tmp_path), dataset='birds')


def cub_splits():
    # Non-contiguous 1-based ids 1, 3, ..., 399 (200 classes).
    train = {f'{i:03d}/img.jpg': 2 * i + 1 for i in range(200)}
    return dict(train=train, val={'000/v.jpg': 1}, test={'001/t.jpg': 3})


def test_fgvc_cub_defaults(tmp_path):
    make_fgvc(
        tmp_path,
        'CUB_200_2011',
        cub_splits(),
        subfolder='images',
        images=False)
    ds = FGVC(data_root=str(tmp_path), dataset='CUB', split='val')
    assert ds.num_classes == 200
    assert ds.dataset_name == 'cub'
    info = ds.get_data_info(0)
    assert info['img_path'] == osp.join(
        str(tmp_path), 'CUB_200_2011', 'images', '000/v.jpg')
    assert info['gt_label'] == 0
    assert ds.metainfo['label_map'][399] == 199


def test_fgvc_image_subfolder_and_folder_override(tmp_path):
    ids = {f'n{i}/x.jpg': i for i in range(120)}
    make_fgvc(
        tmp_path,
        'stanforddogs',
        dict(train=ids),
        subfolder='Images',
        images=False)
    ds = FGVC(data_root=str(tmp_path), dataset='dogs', split='train')
    assert ds.get_data_info(5)['img_path'] == osp.join(
        str(tmp_path), 'stanforddogs', 'Images', 'n5/x.jpg')
    # RLRR layout: StanfordDogs/ with keys relative to the folder root.
    make_fgvc(tmp_path, 'StanfordDogs', dict(train=ids), images=False)
    ds = FGVC(
        data_root=str(tmp_path),
        dataset='dogs',
        split='train',
        folder='StanfordDogs',
        image_subfolder='')
    assert ds.get_data_info(5)['img_path'] == osp.join(
        str(tmp_path), 'StanfordDogs', 'n5/x.jpg')


# ------------------------------------------------------- FGVC bad input
def test_fgvc_empty_json_object_is_error(tmp_path):
    ids = {f'n{i}/x.jpg': i for i in range(120)}
    paths = make_fgvc(
        tmp_path,
        'stanforddogs',
        dict(train=ids, val={}),
        subfolder='Images',
        images=False)
    with pytest.raises(
            AnnotationError,
            match=re.escape(paths['val']) + ': the json object '
            'is empty'):
        FGVC(data_root=str(tmp_path), dataset='dogs', split='train')


def test_fgvc_missing_paths(tmp_path):
    missing = osp.join(str(tmp_path), 'nope')
    with pytest.raises(
            FileNotFoundError,
            match=re.escape(f'data_root not found: {missing}')):
        FGVC(data_root=missing, dataset='cub')
    folder = osp.join(str(tmp_path), 'stanfordcars')
    with pytest.raises(
            FileNotFoundError,
            match=re.escape(f'folder not found: {folder}') +
            '.*folder=.*train,val,test'):
        FGVC(data_root=str(tmp_path), dataset='cars')
    make_fgvc(tmp_path, 'stanforddogs', {'train': {'x.jpg': 0}}, images=False)
    img_dir = osp.join(str(tmp_path), 'stanforddogs', 'Images')
    with pytest.raises(
            FileNotFoundError,
            match=re.escape(f'image folder not found: {img_dir}') +
            ".*image_subfolder='Images'"):
        FGVC(data_root=str(tmp_path), dataset='dogs', split='train')
    with pytest.raises(
            FileNotFoundError,
            match=re.escape(
                osp.join(str(tmp_path), 'stanforddogs', 'test.json'))):
        FGVC(
            data_root=str(tmp_path),
            dataset='dogs',
            split='test',
            image_subfolder='')
    with pytest.raises(
            FileNotFoundError,
            match=re.escape(
                osp.join(str(tmp_path), 'stanforddogs', 'val.json')) +
            '.*trainval.json'):
        FGVC(data_root=str(tmp_path), dataset='dogs', image_subfolder='')


@pytest.mark.parametrize('text, message', [
    ('{"a.jpg": 1,}', 'invalid json at line 1, column 13'),
    ('{"a.jpg": 1,\n "b.jpg" 2}', 'invalid json at line 2, column 10'),
    ('["a.jpg", 1]', 'top-level json value is a list'),
    ('{"a.jpg": "1"}', "key 'a.jpg': class id '1' is not an integer"),
    ('{"a.jpg": 1.5}', "key 'a.jpg': class id 1.5 is not an integer"),
    ('{"a.jpg": true}', "key 'a.jpg': class id True is not an integer"),
    ('{"a.jpg": -2}', "key 'a.jpg': negative class id -2"),
    ('{"": 1}', "key '': empty image path"),
    ('{"/abs/a.jpg": 1}', "key '/abs/a.jpg': absolute image path"),
    ('{"a.jpg": 1, "a.jpg": 2}', "duplicate key 'a.jpg'"),
])
def test_fgvc_bad_json(tmp_path, text, message):
    make_fgvc(tmp_path, 'birds', BIRDS, images=False)
    bad = write_text(tmp_path / 'birds' / 'val.json', text)
    with pytest.raises(
            AnnotationError, match=re.escape(bad) + '.*' + re.escape(message)):
        FGVC(
            data_root=str(tmp_path),
            dataset='birds',
            split='train',
            num_classes=3)


def test_fgvc_class_count_mismatch(tmp_path):
    paths = make_fgvc(tmp_path, 'birds', BIRDS, images=False)
    with pytest.raises(
            AnnotationError,
            match='Found 3 distinct class ids in ' +
            re.escape(paths['train']) + '.*' + re.escape(paths['test']) +
            r".*'birds' expects "
            'num_classes=4'):
        FGVC(data_root=str(tmp_path), dataset='birds', num_classes=4)
    with pytest.raises(
            ValueError, match="num_classes=100 disagrees.*'cub'"
            '.*200 classes'):
        FGVC(data_root=str(tmp_path), dataset='cub', num_classes=100)
    with pytest.raises(ValueError, match="split must be one of.*'train800'"):
        FGVC(data_root=str(tmp_path), dataset='cub', split='train800')


def test_read_vpt_json_direct(tmp_path):
    path = write_text(tmp_path / 'x.json', '{"b.jpg": 4, "a.jpg": 2}')
    assert [tuple(e) for e in read_vpt_json(path)] == [('b.jpg', 4),
                                                       ('a.jpg', 2)]


# --------------------------------------------------- FGVC through pipeline
def test_fgvc_pipeline_and_unreadable_image(tmp_path):
    paths = make_fgvc(tmp_path, 'birds', BIRDS, subfolder='imgs')
    bad = osp.join(str(tmp_path), 'birds', 'imgs', 'b', '2.jpg')
    write_text(bad, '')  # zero bytes: cv2.imdecode raises cv2.error
    ds = FGVC(
        data_root=str(tmp_path),
        dataset='birds',
        num_classes=3,
        image_subfolder='imgs',
        pipeline=LOAD_PIPELINE)
    out = ds[0]
    assert out['inputs'].shape == (3, 224, 224)
    assert out['data_samples'].gt_label.tolist() == [1]
    with pytest.raises(
            cv2.error,
            match=re.escape(f'image {bad} (listed in '
                            f"{paths['train']}, key 'b/2.jpg')")):
        ds[1]


# ---------------------------------------------------------------- configs
def test_vtab_config_builds(tmp_path):
    cfg = Config.fromfile(osp.join(CONFIG_DIR, 'vtab1k.py'))
    assert cfg.data_preprocessor == dict(
        num_classes=100, mean=[127.5] * 3, std=[127.5] * 3, to_rgb=True)
    assert cfg.train_dataloader.batch_size == 32
    assert cfg.train_dataloader.sampler.shuffle is True
    assert cfg.train_dataloader.dataset.split == 'train800val200'
    assert cfg.test_dataloader.dataset.split == 'test'
    assert cfg.val_dataloader.sampler.shuffle is False
    assert cfg.test_evaluator == dict(type='Accuracy', topk=(1, ))
    write_vtab_split(tmp_path, 'cifar', 'train800val200', [1, 2])
    write_vtab_split(tmp_path, 'cifar', 'test', [3])
    cfg.train_dataloader.dataset.data_root = str(tmp_path)
    cfg.test_dataloader.dataset.data_root = str(tmp_path)
    train = DATASETS.build(cfg.train_dataloader.dataset)
    test = DATASETS.build(cfg.test_dataloader.dataset)
    assert isinstance(train, VTAB1k) and (len(train), len(test)) == (2, 1)
    assert train[1]['inputs'].shape == (3, 224, 224)
    assert test[0]['data_samples'].gt_label.tolist() == [3]


def test_fgvc_config_builds(tmp_path):
    cfg = Config.fromfile(osp.join(CONFIG_DIR, 'fgvc.py'))
    assert cfg.data_preprocessor.num_classes == 200
    assert cfg.train_dataloader.dataset.split == 'trainval'
    assert cfg.test_dataloader.dataset.split == 'test'
    assert [t['type'] for t in cfg.test_pipeline] == [
        'LoadImageFromFile', 'ResizeEdge', 'CenterCrop', 'PackInputs'
    ]
    splits = cub_splits()
    make_fgvc(
        tmp_path, 'CUB_200_2011', splits, subfolder='images', images=False)
    write_image(
        osp.join(str(tmp_path), 'CUB_200_2011', 'images', '000/img.jpg'), 40,
        30)
    write_image(
        osp.join(str(tmp_path), 'CUB_200_2011', 'images', '001/t.jpg'), 40, 30)
    cfg.train_dataloader.dataset.data_root = str(tmp_path)
    cfg.test_dataloader.dataset.data_root = str(tmp_path)
    train = DATASETS.build(cfg.train_dataloader.dataset)
    test = DATASETS.build(cfg.test_dataloader.dataset)
    assert isinstance(train, FGVC) and (len(train), len(test)) == (201, 1)
    assert train[0]['inputs'].shape == (3, 224, 224)
    assert test[0]['inputs'].shape == (3, 224, 224)
    assert test[0]['data_samples'].gt_label.tolist() == [1]


def test_norm_imagenet_config(tmp_path):
    child = write_text(
        tmp_path / 'child.py', f"_base_ = ['{CONFIG_DIR}/vtab1k.py',\n"
        f"          '{CONFIG_DIR}/norm_imagenet.py']\n"
        'data_preprocessor = _base_.norm_imagenet\n')
    cfg = Config.fromfile(child)
    assert cfg.data_preprocessor == dict(
        num_classes=100,
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True)
    # Why norm_imagenet.py cannot define data_preprocessor itself:
    clash = write_text(tmp_path / 'clash.py',
                       'data_preprocessor = dict(mean=[0, 0, 0])\n')
    child2 = write_text(tmp_path / 'child2.py',
                        f"_base_ = ['{CONFIG_DIR}/vtab1k.py', '{clash}']\n")
    with pytest.raises(KeyError, match='Duplicate key'):
        Config.fromfile(child2)


def test_vtab_size_warning_and_no_metainfo_file_lookup(tmp_path, monkeypatch):
    import mmengine.dataset.base_dataset as mmengine_base
    import mmtrpts.datasets.vtab1k as vtab_module
    logged = []

    def record(msg, *args, **kwargs):
        logged.append(msg)

    monkeypatch.setattr(vtab_module, 'print_log', record)
    monkeypatch.setattr(mmengine_base, 'print_log', record)
    write_vtab_split(tmp_path, 'kitti', 'val200', [0, 1], images=False)
    ds = VTAB1k(data_root=str(tmp_path), task='kitti', split='val200')
    # str metainfo values are set after init, so mmengine never tries to
    # read them as meta files (which would log 'not a meta file').
    assert logged == [
        f'{ds.ann_file} has 2 samples; VTAB-1k kitti/val200 should have '
        '200. Is the download complete?'
    ]
    assert ds.metainfo['split'] == 'val200'


def test_fgvc_user_classes(tmp_path):
    make_fgvc(tmp_path, 'birds', BIRDS, images=False)
    ds = FGVC(
        data_root=str(tmp_path),
        dataset='birds',
        num_classes=3,
        classes=['x', 'y', 'z'])
    assert ds.metainfo['classes'] == ('x', 'y', 'z')
    assert ds.metainfo['label_map'] == {3: 0, 7: 1, 11: 2}
    with pytest.raises(
            ValueError, match="2 class names given.*'birds' has "
            'num_classes=3'):
        FGVC(
            data_root=str(tmp_path),
            dataset='birds',
            num_classes=3,
            classes=['x', 'y'])
