"""Metadata of the five FGVC data sets with VPT json splits.

See docs/benchmarks.md §2. Folder names and image sub-folders differ between
codebases, so both are per-dataset settings of :class:`FGVC`; the defaults
are the GPS layout.
"""
from typing import Dict, NamedTuple, Optional, Tuple

__all__ = [
    'FGVCInfo', 'FGVC_DATASETS', 'FGVC_SPLITS', 'find_fgvc', 'resolve_fgvc'
]

#: Splits a :class:`FGVC` dataset can load.
FGVC_SPLITS = ('train', 'val', 'trainval', 'test')


class FGVCInfo(NamedTuple):
    """One FGVC data set.

    Attributes:
        name (str): Canonical key (``cub``, ``nabirds``, ...).
        title (str): Human-readable name.
        num_classes (int): Number of classes.
        num_train (int): Images in ``train.json`` (VPT split).
        num_val (int): Images in ``val.json``.
        num_test (int): Images in ``test.json``.
        gps_folder (str): Folder name used by GPS (our default).
        vpetl_folder (str): Folder name used by V-PETL.
        rlrr_folder (str): Folder name used by RLRR.
        spt_key (str): Data-set key used by SPT.
        image_subfolder (str): Folder (inside the data-set folder) that the
            json keys are relative to; ``''`` is the data-set folder.
        aliases (tuple[str]): Other accepted names.
    """

    name: str
    title: str
    num_classes: int
    num_train: int
    num_val: int
    num_test: int
    gps_folder: str
    vpetl_folder: str
    rlrr_folder: str
    spt_key: str
    image_subfolder: str
    aliases: Tuple[str, ...] = ()


_FGVC_LIST = (
    FGVCInfo('cub', 'CUB-200-2011', 200, 5394, 600, 5794, 'CUB_200_2011',
             'CUB_200_2011', 'CUB_200_2011', 'cub', 'images',
             ('cub200', 'cub_200_2011', 'cub2011', 'cub-200-2011')),
    FGVCInfo('nabirds', 'NABirds', 555, 21536, 2393, 24633, 'nabirds',
             'nabirds', 'NABirds', 'nabirds', 'images', ('nabird', )),
    FGVCInfo(
        'flowers', 'Oxford Flowers', 102, 1020, 1020, 6149, 'oxfordflower',
        'OxfordFlower', 'OxfordFlowers', 'oxfordflower', '',
        ('oxfordflower', 'oxfordflowers', 'oxford_flowers', 'flowers102')),
    # Dogs: GPS, SPT and VPT use Images/; RLRR uses the folder root.
    FGVCInfo('dogs', 'Stanford Dogs', 120, 10800, 1200, 8580, 'stanforddogs',
             'StanfordDogs', 'StanfordDogs', 'stanforddog', 'Images',
             ('stanforddogs', 'stanforddog', 'stanford_dogs')),
    FGVCInfo('cars', 'Stanford Cars', 196, 7329, 815, 8041, 'stanfordcars',
             'StanfordCars', 'StanfordCars', 'stanfordcar', '',
             ('stanfordcars', 'stanfordcar', 'stanford_cars')),
)

#: Canonical key -> :class:`FGVCInfo`.
FGVC_DATASETS: Dict[str, FGVCInfo] = {d.name: d for d in _FGVC_LIST}


def _normalize(name: str) -> str:
    return name.strip().lower().replace('-', '_')


_ALIASES: Dict[str, str] = {
    _normalize(alias): info.name
    for info in _FGVC_LIST
    for alias in (info.name, ) + info.aliases
}


def find_fgvc(name: str) -> Optional[FGVCInfo]:
    """Look up an FGVC data set by key or alias (case-insensitive).

    Returns:
        FGVCInfo, optional: The data set, or None if ``name`` is unknown.
    """
    key = _ALIASES.get(_normalize(name))
    return None if key is None else FGVC_DATASETS[key]


def resolve_fgvc(name: str) -> FGVCInfo:
    """Look up an FGVC data set; raise ValueError listing valid names."""
    info = find_fgvc(name)
    if info is None:
        raise ValueError(
            f'Unknown FGVC data set {name!r}. Valid names: '
            f'{", ".join(FGVC_DATASETS)} (aliases: '
            f'{", ".join(a for d in _FGVC_LIST for a in d.aliases)})')
    return info
