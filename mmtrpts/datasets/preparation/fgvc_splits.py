"""Build VPT-style FGVC json splits from the official dataset archives.

Use this only where the published VPT split files (``train.json``,
``val.json``, ``test.json`` of the GPS ``fgvc_split.zip`` or V-PETL's
copy) cannot be had: those hold VPT's exact image ids; this module
reproduces VPT's split **sizes**, not its image ids.

Each json maps an image path, relative to the data set's image sub-folder
(:attr:`FGVCInfo.image_subfolder`), to an integer class id. The official
files read from the extracted archive folder ``archive_dir``:

* CUB: ``images.txt``, ``image_class_labels.txt`` and
  ``train_test_split.txt``; keys as in ``images.txt`` (under ``images/``).
* NABirds: the same three files as CUB.
* Flowers: ``imagelabels.mat`` (``labels``) and ``setid.mat`` (``trnid``,
  ``valid``, ``tstid``); keys ``jpg/image_%05d.jpg`` (folder root).
* Dogs: ``lists/train_list.mat`` and ``lists/test_list.mat`` (or without
  ``lists/``) with ``file_list`` and ``labels``; keys as in ``file_list``
  (under ``Images/``).
* Cars: ``devkit/cars_train_annos.mat`` and
  ``cars_test_annos_withlabels.mat`` (in ``devkit/`` or the folder
  itself), struct array ``annotations`` with fields ``fname`` and
  ``class``; keys ``cars_train/<fname>`` and ``cars_test/<fname>``
  (folder root).

Class ids: the official 1-based ids of CUB, Flowers, Dogs and Cars are
written 0-based (id - 1); NABirds' ids are not contiguous and are written
as they are (the FGVC dataset remaps ids of any kind to ``0..C-1``).

Only Flowers has an official val split (1020/1020/6149). For the others
val is drawn from the official train set, stratified by class: class ``c``
with ``n_c`` of the ``N`` train images gets ``floor(n_c * V / N)`` val
images, and the remaining ones go to the classes with the largest
remainders (ties: smaller class id), never taking a class's last train
image; ``V`` is VPT's val size (``FGVCInfo.num_val``: CUB 600, NABirds
2393, Dogs 1200, Cars 815). Within a class the images with the smallest
``sha256(f'{seed}:{path}')`` are taken, so the draw depends only on the
seed and the file names.
"""
import hashlib
import json
import os
import os.path as osp
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from scipy.io import loadmat

from ..annotation_io import AnnotationError
from ..fgvc_meta import resolve_fgvc

__all__ = [
    'OfficialSplits', 'read_official_splits', 'allocate_val',
    'stratified_val_split', 'build_fgvc_splits', 'write_fgvc_splits'
]

Split = Dict[str, int]


class OfficialSplits(NamedTuple):
    """The splits of an official archive; ``val`` is None if it has none."""

    train: Split
    val: Optional[Split]
    test: Split


def _add(split: Split, key: str, class_id: int, path: str) -> None:
    """Add one image to a split; an image listed twice is an error."""
    if key in split:
        raise AnnotationError(f'{path}: image {key!r} is listed twice', path)
    split[key] = class_id


# ------------------------------------------------------------ text files
def _read_id_file(path: str, what: str) -> Dict[str, str]:
    """Read ``<image id> <value>`` lines into an ordered dict."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'Official split file not found: {path}')
    with open(path, encoding='utf-8') as f:
        lines = f.read().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    result: Dict[str, str] = {}
    for line_no, line in enumerate(lines, start=1):
        parts = line.strip().split(' ', 1)
        if len(parts) != 2 or not parts[1].strip():
            raise AnnotationError(
                f'{path}, line {line_no}: {line!r} is not '
                f"'<image id> <{what}>'", path, line_no)
        image_id, value = parts[0], parts[1].strip()
        if image_id in result:
            raise AnnotationError(
                f'{path}, line {line_no}: image id {image_id!r} appears '
                'again', path, line_no)
        result[image_id] = value
    return result


def _to_int(value: str, path: str, image_id: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise AnnotationError(
            f'{path}: image id {image_id!r}: {what} {value!r} is not an '
            'integer', path) from None


def _read_cub_style(archive_dir: str, shift: int) -> OfficialSplits:
    """CUB and NABirds: ``images.txt`` + labels + train/test flags."""
    names = ('images.txt', 'image_class_labels.txt', 'train_test_split.txt')
    paths = [osp.join(archive_dir, n) for n in names]
    images = _read_id_file(paths[0], 'relative image path')
    labels = _read_id_file(paths[1], 'class id')
    is_train = _read_id_file(paths[2], 'is_training_image (0 or 1)')
    for path, table in zip(paths[1:], (labels, is_train)):
        for image_id in images:
            if image_id not in table:
                raise AnnotationError(
                    f'{path}: no line for image id {image_id!r} of '
                    f'{paths[0]}', path)
        for image_id in table:
            if image_id not in images:
                raise AnnotationError(
                    f'{path}: image id {image_id!r} is not in {paths[0]}',
                    path)
    train: Split = {}
    test: Split = {}
    for image_id, rel_path in images.items():
        class_id = _to_int(labels[image_id], paths[1], image_id, 'class id')
        if class_id - shift < 0:
            raise AnnotationError(
                f'{paths[1]}: image id {image_id!r}: class id {class_id} '
                f'is below {shift}, the first class id', paths[1])
        flag = is_train[image_id]
        if flag not in ('0', '1'):
            raise AnnotationError(
                f'{paths[2]}: image id {image_id!r}: is_training_image '
                f'{flag!r}; expected 0 or 1', paths[2])
        _add(train if flag == '1' else test, rel_path, class_id - shift,
             paths[0])
    return OfficialSplits(train, None, test)


# ------------------------------------------------------------- .mat files
def _find(archive_dir: str, candidates: Sequence[str]) -> str:
    for rel in candidates:
        path = osp.join(archive_dir, rel)
        if osp.isfile(path):
            return path
    tried = ', '.join(osp.join(archive_dir, rel) for rel in candidates)
    raise FileNotFoundError(f'Official split file not found (tried {tried})')


def _load_mat(path: str, keys: Sequence[str]) -> Dict[str, np.ndarray]:
    """Load the given variables of a .mat file, flattened to 1-D."""
    data = loadmat(path)
    found = sorted(k for k in data if not k.startswith('__'))
    for key in keys:
        if key not in data:
            raise AnnotationError(
                f'{path}: no variable {key!r} (found: {", ".join(found)})',
                path)
    return {key: np.asarray(data[key]).reshape(-1) for key in keys}


def _cell(value, path: str, key: str, index: int):
    """Unwrap a one-element cell or matrix entry into a python value."""
    flat = np.asarray(value).reshape(-1)
    if flat.size != 1:
        raise AnnotationError(
            f'{path}: {key}[{index}] holds {flat.size} values; expected one',
            path)
    item = flat[0]
    return item.item() if isinstance(item, np.generic) else item


def _mat_int(value, path: str, key: str, index: int) -> int:
    number = _cell(value, path, key, index)
    if isinstance(number, bool) or not isinstance(
            number, (int, float)) or not float(number).is_integer():
        raise AnnotationError(
            f'{path}: {key}[{index}] is {number!r}; expected an integer', path)
    return int(number)


def _mat_class(value, path: str, key: str, index: int) -> int:
    """A 1-based class id of a .mat file, returned 0-based."""
    class_id = _mat_int(value, path, key, index)
    if class_id < 1:
        raise AnnotationError(
            f'{path}: {key}[{index}] is class {class_id}; expected a 1-based '
            'class id', path)
    return class_id - 1


def _mat_str(value, path: str, key: str, index: int) -> str:
    text = _cell(value, path, key, index)
    if not isinstance(text, str):
        raise AnnotationError(
            f'{path}: {key}[{index}] is {text!r}; expected a file name', path)
    return text


def _read_flowers(archive_dir: str) -> OfficialSplits:
    label_path = _find(archive_dir, ('imagelabels.mat', ))
    setid_path = _find(archive_dir, ('setid.mat', ))
    labels = _load_mat(label_path, ('labels', ))['labels']
    ids = _load_mat(setid_path, ('trnid', 'valid', 'tstid'))
    splits = []
    for key in ('trnid', 'valid', 'tstid'):
        split: Split = {}
        for index, value in enumerate(ids[key]):
            image = _mat_int(value, setid_path, key, index)
            if not 1 <= image <= labels.size:
                raise AnnotationError(
                    f'{setid_path}: {key}[{index}] is image {image}; '
                    f'{label_path} labels images 1..{labels.size}', setid_path)
            label = _mat_class(labels[image - 1], label_path, 'labels',
                               image - 1)
            _add(split, f'jpg/image_{image:05d}.jpg', label, setid_path)
        splits.append(split)
    return OfficialSplits(*splits)


def _read_dogs(archive_dir: str) -> OfficialSplits:
    splits = []
    for name in ('train_list.mat', 'test_list.mat'):
        path = _find(archive_dir, (f'lists/{name}', name))
        data = _load_mat(path, ('file_list', 'labels'))
        files, labels = data['file_list'], data['labels']
        if files.size != labels.size:
            raise AnnotationError(
                f'{path}: file_list has {files.size} entries but labels '
                f'has {labels.size}', path)
        split: Split = {}
        for i, (file, label) in enumerate(zip(files, labels)):
            _add(split, _mat_str(file, path, 'file_list', i),
                 _mat_class(label, path, 'labels', i), path)
        splits.append(split)
    return OfficialSplits(splits[0], None, splits[1])


def _read_cars(archive_dir: str) -> OfficialSplits:
    sources = ((('devkit/cars_train_annos.mat', ), 'cars_train'),
               (('devkit/cars_test_annos_withlabels.mat',
                 'cars_test_annos_withlabels.mat'), 'cars_test'))
    splits = []
    for candidates, image_dir in sources:
        path = _find(archive_dir, candidates)
        annos = _load_mat(path, ('annotations', ))['annotations']
        fields = annos.dtype.names or ()
        for name in ('fname', 'class'):
            if name not in fields:
                raise AnnotationError(
                    f"{path}: 'annotations' has no field {name!r} (fields: "
                    f'{", ".join(fields)})', path)
        split: Split = {}
        for i, anno in enumerate(annos):
            fname = _mat_str(anno['fname'], path, 'fname', i)
            _add(split, f'{image_dir}/{fname}',
                 _mat_class(anno['class'], path, 'class', i), path)
        splits.append(split)
    return OfficialSplits(splits[0], None, splits[1])


_READERS = {
    'cub': lambda d: _read_cub_style(d, shift=1),
    'nabirds': lambda d: _read_cub_style(d, shift=0),
    'flowers': _read_flowers,
    'dogs': _read_dogs,
    'cars': _read_cars,
}


def read_official_splits(dataset: str, archive_dir: str) -> OfficialSplits:
    """Read the official splits of one data set's extracted archive.

    Args:
        dataset (str): ``cub``, ``nabirds``, ``flowers``, ``dogs`` or
            ``cars`` (or an alias).
        archive_dir (str): The extracted archive folder (see the module
            docstring for the files read).

    Returns:
        OfficialSplits: Image path (relative to the image sub-folder) ->
        class id, per split.

    Raises:
        FileNotFoundError: An official file is missing.
        AnnotationError: A file lacks a variable, field or line, or holds
            a bad value; the message names the file.
    """
    return _READERS[resolve_fgvc(dataset).name](archive_dir)


# ---------------------------------------------------------------- val draw
def allocate_val(class_sizes: Dict[int, int], num_val: int) -> Dict[int, int]:
    """Per-class val counts proportional to the class sizes.

    Args:
        class_sizes (dict[int, int]): Class id -> train images.
        num_val (int): Total val images.

    Returns:
        dict[int, int]: Class id -> val images; they sum to ``num_val``
        and leave every class at least one train image.

    Raises:
        ValueError: ``num_val`` is not in ``[1, N - C]`` (N images, C
            classes), so the draw is impossible.
    """
    total = sum(class_sizes.values())
    limit = total - len(class_sizes)
    if not 1 <= num_val <= limit:
        raise ValueError(
            f'Cannot draw {num_val} val images from {total} train images in '
            f'{len(class_sizes)} classes keeping one train image per class; '
            f'expected 1 <= num_val <= {limit}')
    quota = {
        c: min(n * num_val // total, n - 1)
        for c, n in class_sizes.items()
    }
    order = sorted(
        class_sizes, key=lambda c: (-(class_sizes[c] * num_val % total), c))
    left = num_val - sum(quota.values())
    while left:
        for c in order:
            if left and quota[c] < class_sizes[c] - 1:
                quota[c] += 1
                left -= 1
    return quota


def stratified_val_split(train: Split,
                         num_val: int,
                         seed: int = 0) -> Tuple[Split, Split]:
    """Split val off a train split, stratified by class.

    Args:
        train (dict[str, int]): Image path -> class id.
        num_val (int): Val images to draw.
        seed (int): Seed of the draw. Defaults to 0.

    Returns:
        tuple[dict, dict]: The remaining train split and the val split.
    """
    by_class: Dict[int, List[str]] = {}
    for path, class_id in train.items():
        by_class.setdefault(class_id, []).append(path)
    quota = allocate_val({c: len(p) for c, p in by_class.items()}, num_val)

    def rank(path: str) -> str:
        return hashlib.sha256(f'{seed}:{path}'.encode()).hexdigest()

    val: Split = {}
    for class_id in sorted(by_class):
        for path in sorted(by_class[class_id], key=rank)[:quota[class_id]]:
            val[path] = class_id
    rest = {p: c for p, c in train.items() if p not in val}
    return rest, val


def build_fgvc_splits(dataset: str,
                      archive_dir: str,
                      num_val: Optional[int] = None,
                      seed: int = 0) -> Dict[str, Split]:
    """VPT-style train/val/test splits from an official archive.

    Args:
        dataset (str): The data set (name or alias).
        archive_dir (str): The extracted archive folder.
        num_val (int, optional): Val images to draw from the official
            train set. Defaults to VPT's val size; must be None for
            Flowers, which has an official val split.
        seed (int): Seed of the val draw. Defaults to 0.

    Returns:
        dict[str, dict[str, int]]: ``{'train': ..., 'val': ...,
        'test': ...}``, each sorted by image path.
    """
    info = resolve_fgvc(dataset)
    official = read_official_splits(info.name, archive_dir)
    if official.val is not None:
        if num_val is not None:
            raise ValueError(f'{info.title} has an official val split; '
                             f'num_val={num_val} cannot be used')
        train, val = official.train, official.val
    else:
        num_val = info.num_val if num_val is None else num_val
        train, val = stratified_val_split(official.train, num_val, seed)
    splits = dict(train=train, val=val, test=official.test)
    return {name: dict(sorted(s.items())) for name, s in splits.items()}


def write_fgvc_splits(splits: Dict[str, Split],
                      out_dir: str,
                      overwrite: bool = False) -> List[str]:
    """Write ``<split>.json`` files (sorted keys, one entry a line).

    Args:
        splits (dict[str, dict[str, int]]): Split name -> mapping.
        out_dir (str): Output folder (created if needed).
        overwrite (bool): Replace existing files, e.g. published VPT
            splits. Defaults to False.

    Returns:
        list[str]: The paths written.

    Raises:
        FileExistsError: A file exists and ``overwrite`` is False; nothing
            is written then.
    """
    paths = [osp.join(out_dir, f'{name}.json') for name in splits]
    existing = [p for p in paths if osp.exists(p)]
    if existing and not overwrite:
        raise FileExistsError(
            f'Not overwriting {", ".join(existing)} (published VPT splits '
            'are preferable to rebuilt ones; pass overwrite to replace them)')
    os.makedirs(out_dir, exist_ok=True)
    for path, mapping in zip(paths, splits.values()):
        with open(path, 'w', encoding='utf-8') as f:
            json.dump(mapping, f, indent=1, sort_keys=True)
            f.write('\n')
    return paths
