"""FGVC data sets with VPT json splits (docs/benchmarks.md §2)."""
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

from mmpretrain.datasets import BaseDataset
from mmpretrain.registry import DATASETS

from .annotation_io import AnnotationError, JsonEntry, read_vpt_json
from .fgvc_meta import FGVC_SPLITS, FGVCInfo, find_fgvc
from .source_context import SourceContextMixin

__all__ = ['FGVC']

_LAYOUT = ('Expected the VPT layout <data_root>/<folder>/'
           '{train,val,test}.json (optionally trainval.json), each mapping '
           'an image path relative to <folder>/<image_subfolder> to a class '
           'id')


@DATASETS.register_module()
class FGVC(SourceContextMixin, BaseDataset):
    """CUB, NABirds, Oxford Flowers, Stanford Dogs or Stanford Cars with
    the VPT json splits.

    Layout::

        <data_root>/<folder>/train.json  val.json  test.json
        <data_root>/<folder>/trainval.json            (optional)
        <data_root>/<folder>/<image_subfolder>/<json key>

    Each json maps a relative image path to a class id. Class ids need not
    be contiguous: they are remapped to ``0..C-1`` in the order of the
    sorted unique ids over **all** split files present, so every split gets
    the same mapping; it is stored in ``metainfo['label_map']``. Split
    ``'trainval'`` reads ``trainval.json`` if present (SPT, RLRR) and
    otherwise concatenates ``train.json`` and ``val.json`` (GPS).

    Defaults are the GPS folder names (``CUB_200_2011``, ``nabirds``,
    ``oxfordflower``, ``stanforddogs``, ``stanfordcars``) and image
    sub-folders (``images``, ``images``, folder root, ``Images``, folder
    root); other codebases' names are in
    :mod:`mmtrpts.datasets.fgvc_meta`. Any other data set in this layout
    works when ``num_classes`` is given (``folder`` defaults to its name).

    Example config (RLRR's Stanford Dogs layout)::

        train_dataloader = dict(
            dataset=dict(
                type='FGVC',
                data_root='data/fgvc',
                dataset='dogs',
                split='trainval',
                folder='StanfordDogs',
                image_subfolder='',
                pipeline=[
                    dict(type='LoadImageFromFile'),
                    dict(type='RandomResizedCrop', scale=224,
                         interpolation='bicubic'),
                    dict(type='RandomFlip', prob=0.5),
                    dict(type='PackInputs'),
                ]))

    Args:
        data_root (str): Folder that holds the data-set folders.
        dataset (str): ``'cub'``, ``'nabirds'``, ``'flowers'``, ``'dogs'``
            or ``'cars'``, or an alias. Defaults to ``'cub'``.
        split (str): ``'train'``, ``'val'``, ``'trainval'`` or ``'test'``.
            Defaults to ``'trainval'``.
        folder (str, optional): Data-set folder under ``data_root``.
            Defaults to the GPS folder name.
        image_subfolder (str, optional): Folder inside ``folder`` that the
            json keys are relative to; ``''`` means ``folder`` itself.
            Defaults to the GPS layout.
        num_classes (int, optional): Expected number of distinct class ids.
            Defaults to the table value; required for other data sets.
        pipeline (Sequence): Processing pipeline. Defaults to ``()``.
        test_mode (bool): Whether the dataset is used for evaluation.
            Defaults to False.
        **kwargs: Other arguments of :class:`mmpretrain.datasets.
            BaseDataset`.

    Each data info holds ``img_path`` (absolute), ``gt_label`` (remapped
    int), ``ann_file`` (the json it came from) and ``ann_key`` (its key).
    ``metainfo`` holds ``classes`` (unless given: the original ids as
    strings, in label order), ``label_map`` (original id -> label),
    ``dataset`` and ``split``; ``classes`` and ``label_map`` are filled
    when the annotations are loaded.
    """

    def __init__(self,
                 data_root: str,
                 dataset: str = 'cub',
                 split: str = 'trainval',
                 folder: Optional[str] = None,
                 image_subfolder: Optional[str] = None,
                 num_classes: Optional[int] = None,
                 pipeline: Sequence = (),
                 test_mode: bool = False,
                 **kwargs) -> None:
        if not data_root:
            raise ValueError('FGVC needs data_root, the folder that holds '
                             f'the data-set folders. {_LAYOUT}')
        if split not in FGVC_SPLITS:
            raise ValueError(
                f'split must be one of {list(FGVC_SPLITS)}, got {split!r}')
        self.info: Optional[FGVCInfo] = find_fgvc(dataset)
        self.num_classes = self._check_num_classes(dataset, num_classes)
        self.split = split
        self.dataset_name = self.info.name if self.info else dataset
        if folder is None:
            folder = self.info.gps_folder if self.info else dataset
        if image_subfolder is None:
            image_subfolder = self.info.image_subfolder if self.info else ''
        self.data_root_abs = osp.abspath(osp.expanduser(data_root))
        self.dataset_dir = osp.join(self.data_root_abs, folder)
        self.image_subfolder = image_subfolder
        self.img_dir = osp.normpath(
            osp.join(self.dataset_dir, image_subfolder))
        self.ann_files: Tuple[str, ...] = ()

        super().__init__(
            ann_file=self._json_path(split),
            data_root=self.data_root_abs,
            data_prefix=dict(img_path=self.img_dir),
            pipeline=pipeline,
            test_mode=test_mode,
            **kwargs)
        # Set after init: mmengine treats str metainfo values as file paths.
        self._metainfo.update(dataset=self.dataset_name, split=split)

    def _check_num_classes(self, dataset: str,
                           num_classes: Optional[int]) -> int:
        """Return the number of classes, checked against the table."""
        if num_classes is not None and (isinstance(num_classes, bool)
                                        or not isinstance(num_classes, int)
                                        or num_classes < 1):
            raise ValueError(f'num_classes must be a positive integer, got '
                             f'{num_classes!r} (dataset {dataset!r})')
        if self.info is None:
            if num_classes is None:
                raise ValueError(
                    f'{dataset!r} is not one of the FGVC data sets (cub, '
                    'nabirds, flowers, dogs, cars), so num_classes is '
                    'unknown: pass num_classes=<N> (and folder=...) to use '
                    'your own data set')
            return num_classes
        if num_classes is not None and num_classes != self.info.num_classes:
            raise ValueError(
                f'num_classes={num_classes} disagrees with FGVC data set '
                f'{self.info.name!r}, which has {self.info.num_classes} '
                'classes')
        return self.info.num_classes

    def _json_path(self, split: str) -> str:
        return osp.join(self.dataset_dir, f'{split}.json')

    def _check_layout(self) -> None:
        """Raise FileNotFoundError naming the missing folder."""
        if not osp.isdir(self.data_root_abs):
            raise FileNotFoundError(
                f'FGVC data_root not found: {self.data_root_abs}. {_LAYOUT}')
        if not osp.isdir(self.dataset_dir):
            raise FileNotFoundError(
                f'FGVC data-set folder not found: {self.dataset_dir} '
                f'(dataset {self.dataset_name!r}; pass folder=... if your '
                f'copy uses another name). {_LAYOUT}')
        if not osp.isdir(self.img_dir):
            raise FileNotFoundError(
                f'FGVC image folder not found: {self.img_dir} '
                f'(image_subfolder={self.image_subfolder!r}; the json keys '
                'are relative to it; pass image_subfolder=... to match '
                'your copy, \'\' for the data-set folder itself)')

    def _split_files(self) -> Tuple[str, ...]:
        """The json files that make up ``self.split``."""
        if self.split != 'trainval' or osp.isfile(self._json_path('trainval')):
            path = self._json_path(self.split)
            if not osp.isfile(path):
                raise FileNotFoundError(
                    f'FGVC split file not found: {path}. {_LAYOUT}')
            return (path, )
        files = (self._json_path('train'), self._json_path('val'))
        for path in files:
            if not osp.isfile(path):
                raise FileNotFoundError(
                    f'FGVC split file not found: {path} (split '
                    "'trainval' reads trainval.json, or train.json plus "
                    f'val.json when it is absent). {_LAYOUT}')
        return files

    def _build_label_map(self,
                         parsed: Dict[str, List[JsonEntry]]) -> Dict[int, int]:
        """Sorted unique ids over all present split files -> 0..C-1."""
        ids = sorted({e.class_id for ents in parsed.values() for e in ents})
        if len(ids) != self.num_classes:
            files = ', '.join(parsed)
            raise AnnotationError(
                f'Found {len(ids)} distinct class ids in {files}, but '
                f'{self.dataset_name!r} expects num_classes='
                f'{self.num_classes}', files)
        return {orig: new for new, orig in enumerate(ids)}

    def load_data_list(self) -> List[dict]:
        """Parse the split's json file(s) and remap the class ids."""
        self._check_layout()
        self.ann_files = self._split_files()
        parsed: Dict[str, List[JsonEntry]] = {}
        for split in FGVC_SPLITS:
            path = self._json_path(split)
            if osp.isfile(path):
                parsed[path] = read_vpt_json(path, hint=_LAYOUT)
        label_map = self._build_label_map(parsed)
        self._metainfo['label_map'] = label_map
        classes = self._metainfo.get('classes')
        if classes is None:
            self._metainfo['classes'] = tuple(str(i) for i in label_map)
        elif len(classes) != self.num_classes:
            raise ValueError(f'{len(classes)} class names given, but '
                             f'{self.dataset_name!r} has num_classes='
                             f'{self.num_classes}')
        return [
            dict(
                img_path=osp.join(self.img_dir, e.rel_path),
                gt_label=label_map[e.class_id],
                ann_file=path,
                ann_key=e.rel_path) for path in self.ann_files
            for e in parsed[path]
        ]

    def sample_source(self, data_info: dict) -> str:
        """Where the sample was listed (for error messages)."""
        return (f'{data_info.get("ann_file")}, key '
                  f'{data_info.get("ann_key")!r}')

    def extra_repr(self) -> List[str]:
        """Extra lines for ``repr``."""
        return [
            f'Data set: \t{self.dataset_name}', f'Split: \t{self.split}',
            f'Number of classes: \t{self.num_classes}',
            f'Annotation files: \t{", ".join(self.ann_files)}',
            f'Image folder: \t{self.img_dir}'
        ]
