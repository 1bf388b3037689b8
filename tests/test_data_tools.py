"""Tests of the data-preparation tools: tree checks, checksum manifests,
FGVC split builders and their CLIs.

Every tree and archive is tiny and written in the real formats: JPEGs via
PIL, ``.mat`` files via scipy with the official variable names and
structures, text files as in the official archives.
"""
import hashlib
import importlib.util
import json
import os
import os.path as osp
import re
import shutil
import zlib

import numpy as np
import pytest
import scipy.io as sio
from conftest import PYTHON, REPO, run_tool
from PIL import Image

from mmtrpts.datasets.annotation_io import AnnotationError, read_vpt_json
from mmtrpts.datasets.fgvc_meta import FGVC_DATASETS
from mmtrpts.datasets.preparation import (check_fgvc, check_vtab1k,
                                          format_report, sha256_file)
from mmtrpts.datasets.preparation.fgvc_splits import (allocate_val,
                                                      build_fgvc_splits,
                                                      read_official_splits,
                                                      stratified_val_split,
                                                      write_fgvc_splits)
from mmtrpts.datasets.preparation.manifest import (ManifestError,
                                                   build_manifest,
                                                   load_manifest,
                                                   verify_manifest,
                                                   write_manifest)
from mmtrpts.datasets.vtab_tasks import VTAB_SPLIT_SIZES, VTAB_TASKS

TOOLS = osp.join(REPO, 'tools', 'dataset_converters')
SIZES = dict(train800=4, val200=2, train800val200=6, test=3)
VTAB_LABELS = {
    'patch_camelyon':
    dict(train800=[0, 1, 0, 1], val200=[1, 0], test=[0, 1, 1]),
    'kitti': dict(train800=[0, 1, 2, 3], val200=[3, 2], test=[1, 0, 2]),
}
CUB_SPLITS = dict(
    train={
        '001.A/a1.jpg': 0,
        '001.A/a2.jpg': 0,
        '002.B/b1.jpg': 1,
        '003.C/c1.jpg': 2
    },
    val={
        '002.B/b2.jpg': 1,
        '003.C/c2.jpg': 2
    },
    test={
        '001.A/a3.jpg': 0,
        '002.B/b3.jpg': 1,
        '003.C/c3.jpg': 2
    })
CARS_FIELDS = ('bbox_x1', 'bbox_y1', 'bbox_x2', 'bbox_y2', 'class', 'fname')
SMALL_CUB = FGVC_DATASETS['cub']._replace(
    num_classes=3, num_train=4, num_val=2, num_test=3)


# --------------------------------------------------------------- helpers
def write_jpeg(path, size=8):
    """A small noise JPEG whose content depends on its path below the
    temporary folder (its last four parts), so a test sees the same bytes
    on every run."""
    os.makedirs(osp.dirname(path), exist_ok=True)
    below_tmp = '/'.join(osp.normpath(path).split(os.sep)[-4:])
    rng = np.random.default_rng(zlib.crc32(below_tmp.encode()))
    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, 'JPEG')


def write_text(path, text):
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        f.write(text)
    return path


def write_lines(path, items):
    return write_text(path, ''.join(f'{a} {b}\n' for a, b in items))


def write_vtab_task(root, task, labels):
    """A task folder whose train800val200 copies train800 + val200."""
    task_dir = osp.join(root, task)
    items = {}
    for split in ('train800', 'val200', 'test'):
        items[split] = []
        for i, label in enumerate(labels[split]):
            rel = f'images/{split}/{i:06d}.jpg'
            write_jpeg(osp.join(task_dir, rel))
            items[split].append((rel, label))
    items['train800val200'] = []
    for i, (rel, label) in enumerate(items['train800'] + items['val200']):
        new = f'images/train800val200/{i:06d}.jpg'
        os.makedirs(osp.dirname(osp.join(task_dir, new)), exist_ok=True)
        shutil.copy(osp.join(task_dir, rel), osp.join(task_dir, new))
        items['train800val200'].append((new, label))
    for split, lines in items.items():
        write_lines(osp.join(task_dir, f'{split}.txt'), lines)


def write_fgvc_tree(root,
                    folder='CUB_200_2011',
                    subfolder='images',
                    splits=CUB_SPLITS):
    ds_dir = osp.join(root, folder)
    for split, mapping in splits.items():
        write_text(osp.join(ds_dir, f'{split}.json'), json.dumps(mapping))
        for key in mapping:
            write_jpeg(osp.join(ds_dir, subfolder, key))
    return ds_dir


def errors(report):
    return [(f.check, f.file, f.where) for f in report.errors]


def only_error(findings):
    errs = [f for f in findings if f.level == 'error']
    assert len(errs) == 1, errs
    return errs[0]


def load_tool(name):
    spec = importlib.util.spec_from_file_location(
        name, osp.join(TOOLS, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def vtab_root(tmp_path):
    root = str(tmp_path / 'vtab-1k')
    for task, labels in VTAB_LABELS.items():
        write_vtab_task(root, task, labels)
    return root


# ------------------------------------------------------------ VTAB-1k
def test_vtab_valid_tree_passes(vtab_root):
    report = check_vtab1k(vtab_root, ['camelyon', 'kitti'], split_sizes=SIZES)
    assert report.subjects == ['patch_camelyon', 'kitti']
    assert report.errors == []
    assert report.by_level('warning') == []
    assert report.images_decoded
    assert len(report.files) == 2 * (4 + 15)
    assert report.files == sorted(report.files)
    assert 'kitti/test.txt' in report.files
    assert 'kitti/images/train800val200/000005.jpg' in report.files
    union = [f for f in report.findings if f.check == 'union']
    assert [f.level for f in union] == ['ok', 'ok']
    assert '6 samples' in union[1].message
    text = format_report(report)
    assert 'every listed image decoded with PIL' in text
    assert text.splitlines()[-1].startswith('PASSED: 0 errors, 0 warnings')


def test_vtab_default_checks_all_19_tasks(vtab_root):
    report = check_vtab1k(vtab_root, split_sizes=SIZES, check_images=False)
    assert report.subjects == list(VTAB_TASKS)
    missing = set(VTAB_TASKS) - set(VTAB_LABELS)
    assert sorted(errors(report)) == sorted(
        ('folder', osp.join(vtab_root, task), '') for task in missing)


def test_vtab_real_sizes_by_default(vtab_root):
    report = check_vtab1k(vtab_root, ['kitti'], check_images=False)
    counts = {(osp.basename(f.file), f.message, f.expected)
              for f in report.errors}
    assert counts == {('train800.txt', '4 samples', '800 samples'),
                      ('val200.txt', '2 samples', '200 samples'),
                      ('train800val200.txt', '6 samples', '1000 samples'),
                      ('test.txt', '3 samples', '711 samples')}


def test_vtab_missing_split_file(vtab_root):
    path = osp.join(vtab_root, 'kitti', 'val200.txt')
    os.remove(path)
    report = check_vtab1k(vtab_root, ['kitti'], split_sizes=SIZES)
    error = only_error(report.findings)
    assert (error.check, error.file) == ('file', path)
    assert error.message == 'split file not found'
    warning = report.by_level('warning')
    assert [w.check for w in warning] == ['union']
    assert 'val200 could not be read' in warning[0].message


def test_vtab_malformed_split_file(vtab_root):
    path = write_text(
        osp.join(vtab_root, 'kitti', 'train800.txt'),
        'images/train800/000000.jpg 0\nimages/train800/000001.jpg one\n')
    report = check_vtab1k(vtab_root, ['kitti'], split_sizes=SIZES)
    error = only_error(report.findings)
    assert (error.check, error.file, error.where) == ('file', path, 'line 2')
    assert error.message.startswith('cannot be parsed, so not checked '
                                    f"further: {path}, line 2: label 'one'")


def test_vtab_wrong_count_and_repeated_line(vtab_root):
    path = osp.join(vtab_root, 'kitti', 'test.txt')
    with open(path, 'a') as f:
        f.write('images/test/000000.jpg 1\n')
    report = check_vtab1k(vtab_root, ['kitti'], split_sizes=SIZES)
    assert errors(report) == [('count', path, ''), ('file', path, 'line 4')]
    count, repeated = report.errors
    assert (count.message, count.expected) == ('4 samples', '3 samples')
    assert repeated.message == ('image images/test/000000.jpg is listed '
                                'again (first on line 1)')


def test_vtab_label_out_of_range(vtab_root):
    path = osp.join(vtab_root, 'kitti', 'test.txt')
    write_lines(path, [(f'images/test/{i:06d}.jpg', label)
                       for i, label in enumerate([1, 4, 2])])
    report = check_vtab1k(vtab_root, ['kitti'], split_sizes=SIZES)
    error = only_error(report.findings)
    assert (error.check, error.file, error.where) == ('labels', path, 'line 2')
    assert error.message == 'label 4 (images/test/000001.jpg)'
    assert error.expected == '0 <= label < num_classes=4'
    # labels 0..3 still all occur, so no class-count warning
    assert report.by_level('warning') == []


def test_vtab_unreadable_images(vtab_root):
    task_dir = osp.join(vtab_root, 'kitti')
    truncated = osp.join(task_dir, 'images', 'test', '000001.jpg')
    write_jpeg(truncated, size=32)
    with open(truncated, 'rb') as f:
        data = f.read()
    with open(truncated, 'wb') as f:
        f.write(data[:len(data) // 2])
    write_text(osp.join(task_dir, 'images', 'test', '000002.jpg'), 'text')
    os.remove(osp.join(task_dir, 'images', 'val200', '000001.jpg'))
    report = check_vtab1k(vtab_root, ['kitti'], split_sizes=SIZES)
    test_txt = osp.join(task_dir, 'test.txt')
    assert errors(report) == [
        ('image', osp.join(task_dir, 'val200.txt'), 'line 2'),
        ('image', test_txt, 'line 2'),
        ('image', test_txt, 'line 3'),
    ]
    missing, cut, text = report.errors
    assert missing.message == 'images/val200/000001.jpg: image file not found'
    assert re.match(
        r'images/test/000001\.jpg: cannot be decoded \(OSError: .*'
        r'[Tt]runcated', cut.message)
    assert text.message.startswith('images/test/000002.jpg: cannot be '
                                   'decoded (UnidentifiedImageError')
    assert cut.expected == 'a decodable image file'
    warning = report.by_level('warning')
    assert [w.check for w in warning] == ['union']
    assert warning[0].message == ('train800 + val200 == train800val200 not '
                                  'checked: 1 of their samples have no '
                                  'image file')
    assert 'kitti/images/val200/000001.jpg' not in report.files

    fast = check_vtab1k(
        vtab_root, ['kitti'], split_sizes=SIZES, check_images=False)
    assert not fast.images_decoded
    assert errors(fast) == [('image', osp.join(task_dir,
                                               'val200.txt'), 'line 2')]
    assert fast.errors[0].expected == 'an existing image file'
    assert 'NOT decoded (--no-images)' in format_report(fast)


def test_vtab_train800val200_must_equal_train800_plus_val200(vtab_root):
    task_dir = osp.join(vtab_root, 'kitti')
    path = osp.join(task_dir, 'train800val200.txt')
    labels = [0, 1, 2, 3, 3, 1]  # the second val200 image: label 2 -> 1
    write_lines(path, [(f'images/train800val200/{i:06d}.jpg', label)
                       for i, label in enumerate(labels)])
    report = check_vtab1k(vtab_root, ['kitti'], split_sizes=SIZES)
    assert errors(report) == [('union', path, 'line 6'),
                              ('union', osp.join(task_dir,
                                                 'val200.txt'), 'line 2')]
    extra, lost = report.errors
    assert extra.message.startswith('images/train800val200/000005.jpg '
                                    '(label 1) is in neither')
    assert lost.message.startswith('images/val200/000001.jpg (label 2) is '
                                   'not in train800val200.txt')


# ----------------------------------------------------------------- FGVC
def test_fgvc_valid_trees_pass(tmp_path):
    root = str(tmp_path)
    write_fgvc_tree(root)
    # RLRR's Stanford Dogs layout: other folder, images at its root, a
    # trainval.json, and class ids that are not contiguous.
    dog_splits = dict(
        train={
            'n1-a/1.jpg': 5,
            'n2-b/1.jpg': 17
        },
        val={'n3-c/1.jpg': 40},
        test={
            'n1-a/2.jpg': 5,
            'n2-b/2.jpg': 17,
            'n3-c/2.jpg': 40
        })
    dog_splits['trainval'] = dict(dog_splits['train'], **dog_splits['val'])
    write_fgvc_tree(root, 'StanfordDogs', '', dog_splits)
    table = dict(
        cub=SMALL_CUB,
        dogs=FGVC_DATASETS['dogs']._replace(
            num_classes=3, num_train=2, num_val=1, num_test=3))
    report = check_fgvc(
        root, ['cub200', 'dogs'],
        folders={'stanforddogs': 'StanfordDogs'},
        image_subfolders={'dogs': ''},
        dataset_table=table)
    assert report.subjects == ['cub', 'dogs']
    assert report.errors == []
    assert report.by_level('warning') == []
    assert 'CUB_200_2011/images/001.A/a1.jpg' in report.files
    assert 'StanfordDogs/n3-c/2.jpg' in report.files
    assert 'StanfordDogs/trainval.json' in report.files
    oks = {
        (f.subject, f.check, osp.basename(f.file)): f.message
        for f in report.by_level('ok')
    }
    assert oks[('cub', 'file', 'trainval.json')].startswith('absent')
    assert oks[('dogs', 'trainval',
                'trainval.json')] == ('equals train.json + val.json')
    assert oks[('dogs', 'classes', 'StanfordDogs')] == (
        '3 distinct class ids over train.json, val.json, test.json, '
        'trainval.json')


def test_fgvc_defects(tmp_path):
    root = str(tmp_path)
    splits = dict(CUB_SPLITS)
    splits['test'] = dict(CUB_SPLITS['test'], **{'001.A/a1.jpg': 7})
    splits['trainval'] = dict(CUB_SPLITS['train'], **{'002.B/b2.jpg': 2})
    ds_dir = write_fgvc_tree(root, splits=splits)
    os.remove(osp.join(ds_dir, 'val.json'))
    report = check_fgvc(root, ['cub'], dataset_table=dict(cub=SMALL_CUB))
    json_path = {s: osp.join(ds_dir, f'{s}.json') for s in splits}
    assert errors(report) == [
        ('file', json_path['val'], ''),
        ('count', json_path['test'], ''),
        ('count', json_path['trainval'], ''),
        ('classes', ds_dir, ''),
        ('overlap', json_path['test'], "key '001.A/a1.jpg'"),
    ]
    _, test_count, trainval_count, classes, overlap = report.errors
    assert (test_count.message, test_count.expected) == ('4 images',
                                                         '3 images')
    assert trainval_count.expected == '6 images'
    assert classes.message.startswith('4 distinct class ids')
    assert classes.expected == 'num_classes=3'
    assert overlap.message == f'001.A/a1.jpg is also in {json_path["train"]}'
    # trainval cannot be compared without val.json: said, not skipped
    warning = report.by_level('warning')
    assert [(w.check, w.file)
            for w in warning] == [('trainval', json_path['trainval'])]


def test_fgvc_trainval_mismatch_and_missing_image_folder(tmp_path):
    root = str(tmp_path)
    splits = dict(CUB_SPLITS)
    splits['trainval'] = dict(CUB_SPLITS['train'], **CUB_SPLITS['val'])
    splits['trainval']['002.B/b2.jpg'] = 0
    ds_dir = write_fgvc_tree(root, splits=splits)
    report = check_fgvc(
        root, ['cub'],
        image_subfolders={'cub': 'pictures'},
        dataset_table=dict(cub=SMALL_CUB))
    assert errors(report) == [
        ('trainval', osp.join(ds_dir, 'trainval.json'), "key '002.B/b2.jpg'"),
        ('folder', osp.join(ds_dir, 'pictures'), ''),
    ]
    assert report.errors[0].message == (
        '002.B/b2.jpg has class 0, train/val say 1')
    assert 'images not checked' in report.errors[1].message


def test_fgvc_real_table_by_default(tmp_path):
    root = str(tmp_path)
    ds_dir = write_fgvc_tree(root)
    report = check_fgvc(root, check_images=False)
    assert report.subjects == list(FGVC_DATASETS)
    assert errors(report) == [
        ('count', osp.join(ds_dir, 'train.json'), ''),
        ('count', osp.join(ds_dir, 'val.json'), ''),
        ('count', osp.join(ds_dir, 'test.json'), ''),
        ('classes', ds_dir, ''),
    ] + [('folder', osp.join(root, info.gps_folder), '')
         for info in list(FGVC_DATASETS.values())[1:]]
    assert report.errors[0].expected == '5394 images'
    with pytest.raises(ValueError, match="Unknown FGVC data set 'mnist'"):
        check_fgvc(root, ['mnist'])


def test_fgvc_long_runs_are_summarised(tmp_path):
    root = str(tmp_path)
    keys = {f'001.A/{i}.jpg': 0 for i in range(25)}
    ds_dir = write_fgvc_tree(root, splits=CUB_SPLITS)
    write_text(osp.join(ds_dir, 'test.json'), json.dumps(keys))
    table = dict(cub=SMALL_CUB._replace(num_classes=3, num_test=25))
    report = check_fgvc(root, ['cub'], check_images=False, dataset_table=table)
    test_json = osp.join(ds_dir, 'test.json')
    assert errors(report) == [('image', test_json, f"key '001.A/{i}.jpg'")
                              for i in range(20)] + [('image', test_json, '')]
    assert report.errors[-1].message == (
        "5 more error findings of check 'image' in this file (not listed)")


# ------------------------------------------------------------- manifest
def test_manifest_is_deterministic_and_catches_changes(vtab_root, tmp_path):
    files = check_vtab1k(
        vtab_root, ['kitti'], split_sizes=SIZES, check_images=False).files
    first, second = str(tmp_path / 'a.json'), str(tmp_path / 'b.json')
    write_manifest(build_manifest(vtab_root, 'vtab1k', files), first)
    write_manifest(
        build_manifest(vtab_root, 'vtab1k', files[::-1] + files[:2]), second)
    with open(first, 'rb') as f:
        text = f.read()
    with open(second, 'rb') as f:
        assert f.read() == text
    manifest = load_manifest(first, 'vtab1k')
    assert manifest['format_version'] == 1
    assert manifest['benchmark'] == 'vtab1k'
    assert manifest['num_files'] == len(files) == 19
    assert list(manifest['files']) == files
    image = osp.join(vtab_root, 'kitti', 'images', 'test', '000000.jpg')
    with open(image, 'rb') as f:
        data = bytearray(f.read())
    assert manifest['files']['kitti/images/test/000000.jpg'] == (
        hashlib.sha256(data).hexdigest())
    [ok] = verify_manifest(vtab_root, manifest, files, first)
    assert (ok.level, ok.message) == ('ok', 'all 19 files match')

    old = sha256_file(image)
    data[-3] ^= 1
    with open(image, 'wb') as f:
        f.write(bytes(data))
    changed = only_error(verify_manifest(vtab_root, manifest, files, first))
    assert changed.file == image
    assert changed.message == f'changed: sha256 {sha256_file(image)}'
    assert changed.expected == f'sha256 {old} (from {first})'

    gone = osp.join(vtab_root, 'kitti', 'test.txt')
    os.remove(gone)
    findings = verify_manifest(vtab_root, manifest,
                               files + ['kitti/images/new.jpg'], first)
    assert [(f.file, f.message) for f in findings] == [
        (image, changed.message),
        (gone, f'file listed in {first} not found'),
        (osp.join(vtab_root, 'kitti/images/new.jpg'),
         f'listed by the tree but not in {first}'),
    ]


@pytest.mark.parametrize('edit, match', [
    (dict(benchmark='fgvc'), "key 'benchmark' is 'fgvc'; expected 'vtab1k'"),
    (dict(format_version=2), "key 'format_version' is 2; expected 1"),
    (dict(num_files=3), "key 'num_files' is 3 but 'files' has 1 entries"),
    (dict(files={'a.txt': 'abc'}), "entry 'a.txt': 'abc' is not a sha256"),
])
def test_manifest_load_errors(tmp_path, edit, match):
    path = str(tmp_path / 'm.json')
    write_text(str(tmp_path / 'a.txt'), 'a')
    manifest = build_manifest(str(tmp_path), 'vtab1k', ['a.txt'])
    manifest.update(edit)
    write_manifest(manifest, path)
    with pytest.raises(ManifestError, match=f'{path}: .*' + match):
        load_manifest(path, 'vtab1k')


# ------------------------------------------------------- split builders
def write_cub_archive(archive,
                      classes,
                      train_per_class,
                      offset=1,
                      image_ids=None):
    """CUB-format text files; ``classes`` are the ids written."""
    images, labels, flags = [], [], []
    for cls, n_train in zip(classes, train_per_class):
        for i in range(n_train + 1):
            image_id = (image_ids or str)(len(images) + offset)
            images.append((image_id, f'{cls:03d}.C{cls}/img_{i}.jpg'))
            labels.append((image_id, cls))
            flags.append((image_id, int(i < n_train)))
    write_lines(osp.join(archive, 'images.txt'), images)
    write_lines(osp.join(archive, 'image_class_labels.txt'), labels)
    write_lines(osp.join(archive, 'train_test_split.txt'), flags)


def expected_val(train, quota, seed):
    """The documented draw: smallest sha256(f'{seed}:{path}') per class."""
    val = {}
    for cls, count in quota.items():
        paths = sorted(
            (p for p, c in train.items() if c == cls),
            key=lambda p: hashlib.sha256(f'{seed}:{p}'.encode()).hexdigest())
        val.update({p: cls for p in paths[:count]})
    return val


def test_allocate_val():
    assert allocate_val({1: 5, 2: 4, 3: 3}, 3) == {1: 1, 2: 1, 3: 1}
    # floor 3/2/0, one left: largest remainder (class 2), class 3 capped
    assert allocate_val({1: 30, 2: 29, 3: 1}, 6) == {1: 3, 2: 3, 3: 0}
    assert allocate_val({1: 100, 2: 100}, 20) == {1: 10, 2: 10}
    with pytest.raises(ValueError, match='expected 1 <= num_val <= 57'):
        allocate_val({1: 30, 2: 29, 3: 1}, 58)


def test_build_cub_splits(tmp_path):
    archive = str(tmp_path / 'CUB_200_2011')
    write_cub_archive(archive, [1, 2, 3], [5, 4, 3])
    splits = build_fgvc_splits('cub', archive, num_val=3, seed=0)
    official = read_official_splits('cub', archive)
    assert official.val is None
    assert official.train == {
        f'{c:03d}.C{c}/img_{i}.jpg': c - 1
        for c, n in zip([1, 2, 3], [5, 4, 3])
        for i in range(n)
    }
    assert splits['test'] == {
        '001.C1/img_5.jpg': 0,
        '002.C2/img_4.jpg': 1,
        '003.C3/img_3.jpg': 2
    }
    assert splits['val'] == expected_val(
        official.train, {
            0: 1,
            1: 1,
            2: 1
        }, seed=0)
    assert splits['train'] == {
        p: c
        for p, c in official.train.items() if p not in splits['val']
    }
    assert list(splits['train']) == sorted(splits['train'])
    assert build_fgvc_splits('cub', archive, num_val=3) == splits
    other = build_fgvc_splits('cub', archive, num_val=3, seed=1)
    assert other['val'] == expected_val(
        official.train, {
            0: 1,
            1: 1,
            2: 1
        }, seed=1)
    rest, val = stratified_val_split(official.train, 3, seed=0)
    assert (rest, val) == (splits['train'], splits['val'])


def test_build_nabirds_splits_keeps_class_ids(tmp_path):
    archive = str(tmp_path / 'nabirds')
    write_cub_archive(
        archive, [295, 817, 1000], [4, 4, 2],
        image_ids=lambda n: f'0000{n:04d}-21dc-4d0c-bfe1-4cae3c85c829')
    splits = build_fgvc_splits('nabirds', archive, num_val=2)
    assert sorted(set(splits['test'].values())) == [295, 817, 1000]
    assert len(splits['val']) == 2
    assert sorted(splits['val'].values()) == [295, 817]
    assert len(splits['train']) == 8


def write_flowers_archive(archive):
    labels = np.array([[1, 2, 3, 1, 2, 3, 1, 2]], dtype=np.uint8)
    sio.savemat(osp.join(archive, 'imagelabels.mat'), {'labels': labels})
    sio.savemat(
        osp.join(archive, 'setid.mat'), {
            'trnid': np.array([[1, 2, 3]], dtype=np.uint16),
            'valid': np.array([[4, 5, 6]], dtype=np.uint16),
            'tstid': np.array([[8, 7]], dtype=np.uint16)
        })
    for i in range(1, 9):
        write_jpeg(osp.join(archive, 'jpg', f'image_{i:05d}.jpg'))


def test_build_flowers_splits(tmp_path):
    archive = str(tmp_path / 'oxfordflower')
    os.makedirs(archive)
    write_flowers_archive(archive)
    splits = build_fgvc_splits('flowers', archive)
    assert splits == dict(
        train={
            'jpg/image_00001.jpg': 0,
            'jpg/image_00002.jpg': 1,
            'jpg/image_00003.jpg': 2
        },
        val={
            'jpg/image_00004.jpg': 0,
            'jpg/image_00005.jpg': 1,
            'jpg/image_00006.jpg': 2
        },
        test={
            'jpg/image_00007.jpg': 0,
            'jpg/image_00008.jpg': 1
        })
    with pytest.raises(ValueError, match='official val split'):
        build_fgvc_splits('flowers', archive, num_val=2)
    paths = write_fgvc_splits(splits, archive)
    assert [osp.basename(p)
            for p in paths] == ['train.json', 'val.json', 'test.json']
    assert read_vpt_json(paths[2]) == [('jpg/image_00007.jpg', 0),
                                       ('jpg/image_00008.jpg', 1)]
    with pytest.raises(FileExistsError, match='Not overwriting'):
        write_fgvc_splits(splits, archive)


def mat_cells(strings):
    """A column cell array of strings, as MATLAB saves a file list."""
    cells = np.empty((len(strings), 1), dtype=object)
    for i, text in enumerate(strings):
        cells[i, 0] = np.array([text])
    return cells


def test_build_dogs_splits(tmp_path):
    archive = str(tmp_path / 'stanforddogs')
    os.makedirs(osp.join(archive, 'lists'))
    train = [f'n0{c}-breed{c}/n0{c}_{i}.jpg' for c in (1, 2) for i in range(3)]
    for name, files, labels in (('train_list.mat', train, [1, 1, 1, 2, 2, 2]),
                                ('test_list.mat', ['n01-breed1/n01_9.jpg'],
                                 [1])):
        sio.savemat(
            osp.join(archive, 'lists', name), {
                'file_list': mat_cells(files),
                'annotation_list': mat_cells([f[:-4] for f in files]),
                'labels': np.array(labels, dtype=np.float64).reshape(-1, 1)
            })
    splits = build_fgvc_splits('dogs', archive, num_val=2)
    assert splits['test'] == {'n01-breed1/n01_9.jpg': 0}
    official = {f: int(f[2]) - 1 for f in train}
    assert splits['val'] == expected_val(official, {0: 1, 1: 1}, seed=0)
    assert dict(splits['train'], **splits['val']) == official

    sio.savemat(
        osp.join(archive, 'lists', 'test_list.mat'),
        {'file_list': mat_cells(['n01-breed1/n01_9.jpg'])})
    with pytest.raises(
            AnnotationError,
            match=r"test_list.mat: no variable 'labels' "
            r'\(found: file_list\)'):
        build_fgvc_splits('dogs', archive, num_val=2)


def cars_annotations(fnames, classes, fields=CARS_FIELDS):
    """The 1 x N struct array of the Stanford Cars devkit."""
    annos = np.zeros((1, len(fnames)), dtype=[(f, 'O') for f in fields])
    for i, (fname, cls) in enumerate(zip(fnames, classes)):
        values = dict(
            bbox_x1=1, bbox_y1=2, bbox_x2=30, bbox_y2=40, **{'class': cls})
        annos[0, i] = tuple(
            np.array([fname]) if f ==
            'fname' else np.array([[values[f]]], dtype=np.uint16)
            for f in fields)
    return annos


def test_build_cars_splits(tmp_path):
    archive = str(tmp_path / 'stanfordcars')
    os.makedirs(osp.join(archive, 'devkit'))
    sio.savemat(
        osp.join(archive, 'devkit', 'cars_train_annos.mat'), {
            'annotations':
            cars_annotations([f'{i:05d}.jpg'
                              for i in range(1, 7)], [1, 2, 3, 1, 2, 3])
        })
    test_mat = osp.join(archive, 'cars_test_annos_withlabels.mat')
    sio.savemat(test_mat, {
        'annotations':
        cars_annotations(['00001.jpg', '00002.jpg'], [3, 196])
    })
    splits = build_fgvc_splits('cars', archive, num_val=2)
    assert splits['test'] == {
        'cars_test/00001.jpg': 2,
        'cars_test/00002.jpg': 195
    }
    official = {
        f'cars_train/{i:05d}.jpg': c
        for i, c in zip(range(1, 7), [0, 1, 2, 0, 1, 2])
    }
    assert dict(splits['train'], **splits['val']) == official
    assert len(splits['val']) == 2 and len(splits['train']) == 4

    annos = cars_annotations(['00001.jpg'], [3], ('bbox_x1', 'fname'))
    sio.savemat(test_mat, {'annotations': annos})
    with pytest.raises(
            AnnotationError,
            match=r"withlabels.mat: 'annotations' has no field "
            r"'class' \(fields: bbox_x1, fname\)"):
        build_fgvc_splits('cars', archive, num_val=2)


def test_official_file_errors(tmp_path):
    archive = str(tmp_path / 'cub')
    write_cub_archive(archive, [1, 2], [2, 2])
    labels = osp.join(archive, 'image_class_labels.txt')
    write_lines(labels, [(i, 1) for i in range(1, 6)])  # ids 1..6 listed
    with pytest.raises(
            AnnotationError, match=f"{labels}: no line for image id '6'"):
        read_official_splits('cub', archive)
    write_text(labels, '1 1\n2\n')
    with pytest.raises(
            AnnotationError,
            match=f"{labels}, line 2: '2' is not '<image id> "
            "<class id>'"):
        read_official_splits('cub', archive)
    os.remove(labels)
    with pytest.raises(FileNotFoundError, match=labels):
        read_official_splits('cub', archive)
    with pytest.raises(
            FileNotFoundError,
            match=r'tried .*lists/train_list.mat, '
            r'.*train_list.mat\)'):
        read_official_splits('dogs', archive)
    train_list = osp.join(archive, 'train_list.mat')
    for files, labels, match in (
        (['a/1.jpg', 'a/1.jpg'], [1, 1], "image 'a/1.jpg' is listed twice"),
        (['a/1.jpg', 'a/2.jpg'], [1, 0],
         r'labels\[1\] is class 0; expected a 1-based class id'),
        (['a/1.jpg',
          'a/2.jpg'], [1, 1.5], r'labels\[1\] is 1.5; expected an integer'),
    ):
        sio.savemat(
            train_list, {
                'file_list': mat_cells(files),
                'labels': np.array([labels], dtype=np.float64).T
            })
        with pytest.raises(AnnotationError, match=f'{train_list}: {match}'):
            read_official_splits('dogs', archive)


# ------------------------------------------------------------------- CLIs
def test_build_then_validate_cli(tmp_path, monkeypatch, capsys):
    build, validate = load_tool('build_fgvc_splits'), load_tool(
        'validate_dataset')
    root = str(tmp_path / 'fgvc')
    archive = osp.join(root, 'oxfordflower')
    os.makedirs(archive)
    write_flowers_archive(archive)
    assert build.main(['flowers', archive]) == 0
    out = capsys.readouterr().out
    assert (f'wrote {archive}/train.json: 3 images, 3 classes (VPT train '
            'split: 1020)  <- differs from the published size') in out
    assert build.main(['flowers', archive]) == 1
    assert 'Not overwriting' in capsys.readouterr().err

    monkeypatch.setitem(
        FGVC_DATASETS, 'flowers', FGVC_DATASETS['flowers']._replace(
            num_classes=3, num_train=3, num_val=3, num_test=2))
    manifest, report = str(tmp_path / 'm.json'), str(tmp_path / 'r.json')
    assert validate.main([
        'fgvc', root, '--datasets', 'flowers', '--out', report,
        '--manifest-out', manifest
    ]) == 0
    out = capsys.readouterr().out
    assert 'PASSED: 0 errors' in out
    assert f'Wrote {manifest}: sha256 of 11 files' in out
    with open(report) as f:
        assert json.load(f)['counts']['error'] == 0
    assert validate.main(
        ['fgvc', root, '--datasets', 'flowers', '--manifest-check',
         manifest]) == 0
    write_jpeg(osp.join(archive, 'jpg', 'image_00002.jpg'), size=9)
    assert validate.main([
        'fgvc', root, '--datasets', 'flowers', '--no-images',
        '--manifest-check', manifest
    ]) == 1
    out = capsys.readouterr().out
    assert 'image_00002.jpg: changed: sha256' in out
    assert validate.main(['vtab1k', root, '--manifest-check', manifest]) == 1
    assert "key 'benchmark' is 'fgvc'" in capsys.readouterr().err


def test_validate_cli_vtab(vtab_root, tmp_path, monkeypatch, capsys):
    validate = load_tool('validate_dataset')
    monkeypatch.setitem(VTAB_TASKS, 'kitti',
                        VTAB_TASKS['kitti']._replace(test_size=3))
    for split in ('train800', 'val200', 'train800val200'):
        monkeypatch.setitem(VTAB_SPLIT_SIZES, split, SIZES[split])
    assert validate.main(['vtab1k', vtab_root, '--tasks', 'kitti']) == 0
    os.remove(osp.join(vtab_root, 'kitti', 'images', 'test', '000002.jpg'))
    manifest = str(tmp_path / 'm.json')
    assert validate.main(
        ['vtab1k', vtab_root, '--tasks', 'kitti', '--manifest-out',
         manifest]) == 1
    assert not osp.exists(manifest)
    out = capsys.readouterr().out
    assert 'ERROR   image' in out and 'Not writing' in out


def test_cli_scripts_run(vtab_root, tmp_path):
    """The scripts themselves, in fresh processes, with real sizes."""
    proc = run_tool([
        PYTHON,
        osp.join(TOOLS, 'validate_dataset.py'), 'vtab1k', vtab_root, '--tasks',
        'kitti', '--no-images'
    ])
    assert proc.returncode == 1, proc.stderr
    assert ('ERROR   count    ' +
            osp.join(vtab_root, 'kitti', 'train800.txt') +
            ': 4 samples [expected 800 samples]') in proc.stdout
    assert proc.stdout.splitlines()[-1].startswith('FAILED: 4 errors')
    proc = run_tool([
        PYTHON,
        osp.join(TOOLS, 'build_fgvc_splits.py'), 'cub',
        str(tmp_path / 'nothing')
    ])
    assert proc.returncode == 1
    assert 'error: Official split file not found' in proc.stderr
