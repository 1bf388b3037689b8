"""Procedural image tasks for the embedded mini-benchmark (pure numpy).

Four target tasks mirror the kinds of VTAB-1k task (the "structured" group
is where linear probing fails and fine-tuning matters):

============  ==========  =========================================
task          classes     label
============  ==========  =========================================
counting      6           number of objects - 1 (like clevr_count)
location      8           horizontal position bin (like dsprites_loc)
orientation   8           angle bin of a bar over 180 deg (dsprites_ori)
texture       6           texture family (like dtd)
============  ==========  =========================================

The source task ``shapes`` (shape kind x dominant colour, 24 classes) is what
the embedded backbone is pre-trained on; it is never used for evaluation.

Every image is ``IMG_SIZE x IMG_SIZE`` RGB ``uint8`` on a random textured,
noisy background, so no task is solvable from a single pixel statistic.
"""
from dataclasses import dataclass
from typing import Callable, Dict, Tuple

import numpy as np

IMG_SIZE = 32
SHAPES = ('square', 'disk', 'triangle', 'cross', 'ring', 'diamond')
TEXTURES = ('h-stripes', 'v-stripes', 'diagonal', 'checker', 'dots', 'rings')
# Dominant colour families of the source task: (low, high) per RGB channel.
COLOUR_FAMILIES = (
    ((170, 255), (0, 90), (0, 90)),  # red
    ((0, 90), (170, 255), (0, 90)),  # green
    ((0, 90), (0, 90), (170, 255)),  # blue
    ((170, 255), (170, 255), (0, 90)),  # yellow
)

_YY, _XX = np.mgrid[0:IMG_SIZE, 0:IMG_SIZE].astype(np.float32)


@dataclass(frozen=True)
class SyntheticTask:
    """A procedural classification task.

    Attributes:
        name (str): Task name, also its VTAB-style folder name.
        num_classes (int): Number of classes.
        render (Callable): ``render(rng, label) -> (image, mask)``: a
            ``uint8 [H, W, 3]`` RGB image and the ``bool [H, W]`` mask of
            its object pixels (all False when the label is not carried by
            objects, as for textures).
        kind (str): The VTAB-1k task it imitates.
        has_objects (bool): Whether the masks mark objects (the token
            faithfulness metric needs them).
    """
    name: str
    num_classes: int
    render: Callable[[np.random.Generator, int], Tuple[np.ndarray,
                                                       np.ndarray]]
    kind: str
    has_objects: bool = True


def _background(rng: np.random.Generator) -> np.ndarray:
    """A low-contrast gradient with pixel noise."""
    base = rng.uniform(40, 150, size=3)
    direction = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(direction) * _XX + np.sin(direction) * _YY) / IMG_SIZE
    img = base + rng.uniform(-30, 30, size=3) * ramp[..., None]
    img = img + rng.normal(0, 8, size=(IMG_SIZE, IMG_SIZE, 3))
    return img.astype(np.float32)


def _random_colour(rng: np.random.Generator, background: np.ndarray):
    """A colour that stands out from the mean background."""
    mean = background.mean(axis=(0, 1))
    colour = rng.uniform(0, 255, size=3)
    while np.abs(colour - mean).sum() < 150:
        colour = rng.uniform(0, 255, size=3)
    return colour


def shape_mask(kind: str, cy: float, cx: float, r: float) -> np.ndarray:
    """Boolean mask of a shape of radius ``r`` centred at ``(cy, cx)``."""
    dy, dx = _YY - cy, _XX - cx
    if kind == 'square':
        return (np.abs(dy) <= r) & (np.abs(dx) <= r)
    if kind == 'disk':
        return dy**2 + dx**2 <= r**2
    if kind == 'triangle':
        return (dy <= r) & (dy >= -r) & (np.abs(dx) <= (dy + r) / 2)
    if kind == 'cross':
        return ((np.abs(dy) <= r / 3) & (np.abs(dx) <= r)) | (
            (np.abs(dx) <= r / 3) & (np.abs(dy) <= r))
    if kind == 'ring':
        d2 = dy**2 + dx**2
        return (d2 <= r**2) & (d2 >= (0.55 * r)**2)
    if kind == 'diamond':
        return np.abs(dy) + np.abs(dx) <= r
    raise ValueError(f'unknown shape {kind!r}, expected one of {SHAPES}')


def _paint(img: np.ndarray, mask: np.ndarray, colour) -> None:
    img[mask] = colour


def _finish(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render_counting(rng: np.random.Generator,
                    label: int) -> Tuple[np.ndarray, np.ndarray]:
    """``label + 1`` non-overlapping objects of random shape and colour."""
    img = _background(rng)
    occupied = np.zeros((IMG_SIZE, IMG_SIZE), bool)
    objects = np.zeros((IMG_SIZE, IMG_SIZE), bool)
    placed = 0
    while placed < label + 1:
        r = rng.uniform(1.8, 3.0)
        cy, cx = rng.uniform(r + 1, IMG_SIZE - r - 2, size=2)
        mask = shape_mask(SHAPES[rng.integers(len(SHAPES))], cy, cx, r)
        halo = shape_mask('square', cy, cx, r + 1.5)
        if (occupied & halo).any():
            continue
        occupied |= halo
        objects |= mask
        _paint(img, mask, _random_colour(rng, img))
        placed += 1
    return _finish(img), objects


def render_location(rng: np.random.Generator,
                    label: int) -> Tuple[np.ndarray, np.ndarray]:
    """One object whose horizontal centre lies in bin ``label`` of 8."""
    img = _background(rng)
    r = rng.uniform(2.0, 3.5)
    width = IMG_SIZE / 8
    cx = np.clip(rng.uniform(label * width, (label + 1) * width), r, IMG_SIZE - 1 - r)
    cy = rng.uniform(r, IMG_SIZE - 1 - r)
    mask = shape_mask(SHAPES[rng.integers(len(SHAPES))], cy, cx, r)
    _paint(img, mask, _random_colour(rng, img))
    return _finish(img), mask


def render_orientation(rng: np.random.Generator,
                       label: int) -> Tuple[np.ndarray, np.ndarray]:
    """A bar whose angle lies in bin ``label`` of 8 over [0, 180) deg."""
    img = _background(rng)
    angle = np.deg2rad(rng.uniform(label * 22.5 + 2, (label + 1) * 22.5 - 2))
    cy, cx = rng.uniform(12, IMG_SIZE - 12, size=2)
    half_len, half_width = rng.uniform(7, 10), rng.uniform(1.0, 1.8)
    along = (_XX - cx) * np.cos(angle) + (_YY - cy) * np.sin(angle)
    across = -(_XX - cx) * np.sin(angle) + (_YY - cy) * np.cos(angle)
    mask = (np.abs(along) <= half_len) & (np.abs(across) <= half_width)
    _paint(img, mask, _random_colour(rng, img))
    return _finish(img), mask


def texture_field(kind: str, rng: np.random.Generator) -> np.ndarray:
    """A boolean texture pattern of family ``kind``."""
    period = rng.uniform(3.0, 6.0)
    phase = rng.uniform(0, period)
    if kind == 'h-stripes':
        return ((_YY + phase) % period) < period / 2
    if kind == 'v-stripes':
        return ((_XX + phase) % period) < period / 2
    if kind == 'diagonal':
        sign = rng.choice((-1.0, 1.0))
        return ((_XX + sign * _YY + phase) % (1.4 * period)) < 0.7 * period
    if kind == 'checker':
        return (((_XX + phase) // period + (_YY + phase) // period) % 2) == 0
    if kind == 'dots':
        fy, fx = (_YY + phase) % period, (_XX + phase) % period
        return (fy - period / 2)**2 + (fx - period / 2)**2 <= (period / 3.2)**2
    if kind == 'rings':
        cy, cx = rng.uniform(0, IMG_SIZE, size=2)
        return (np.sqrt((_YY - cy)**2 + (_XX - cx)**2) + phase) % period < (
            period / 2)
    raise ValueError(f'unknown texture {kind!r}, expected one of {TEXTURES}')


def render_texture(rng: np.random.Generator,
                   label: int) -> Tuple[np.ndarray, np.ndarray]:
    """The whole image filled with texture family ``label``."""
    img = _background(rng)
    pattern = texture_field(TEXTURES[label], rng)
    _paint(img, pattern, _random_colour(rng, img))
    img += rng.normal(0, 10, size=img.shape)
    return _finish(img), np.zeros((IMG_SIZE, IMG_SIZE), bool)


def render_shapes(rng: np.random.Generator,
                  label: int) -> Tuple[np.ndarray, np.ndarray]:
    """Source task: shape kind ``label % 6`` in colour family ``label // 6``.

    The object lies anywhere, at any of a wide range of sizes, on a cluttered
    background (a random texture at up to half the object's contrast), so
    the label can only be read from the object: the backbone learns to look
    at objects, as an ImageNet-21k ViT does.  The object's position is the
    second source label (:func:`position_labels`).
    """
    img = _background(rng)
    clutter = texture_field(TEXTURES[rng.integers(len(TEXTURES))], rng)
    img[clutter] += rng.uniform(-45, 45, size=3)
    low_high = np.array(COLOUR_FAMILIES[label // len(SHAPES)], np.float32)
    colour = rng.uniform(low_high[:, 0], low_high[:, 1])
    r = rng.uniform(2.5, 8.0)
    cy, cx = rng.uniform(r, IMG_SIZE - 1 - r, size=2)
    mask = shape_mask(SHAPES[label % len(SHAPES)], cy, cx, r)
    _paint(img, mask, colour)
    return _finish(img), mask


def position_labels(masks: np.ndarray, grid: int) -> np.ndarray:
    """The cell of a ``grid x grid`` partition holding each object's centre.

    The embedded backbone's second source label: with it, the pre-trained
    features carry where the object is (an ImageNet-21k ViT's do; a
    translation-invariant source task would erase it).

    Args:
        masks (np.ndarray): ``bool [N, H, W]`` object masks, none empty.
        grid (int): Cells per side.

    Returns:
        np.ndarray: ``int64 [N]`` labels ``row * grid + column`` of the
        centroid of each mask.
    """
    masks = np.asarray(masks, bool)
    area = masks.sum(axis=(1, 2))
    if masks.ndim != 3 or (area == 0).any():
        raise ValueError('position labels need bool [N, H, W] masks with '
                         'at least one object pixel each')
    height, width = masks.shape[1:]
    cy = (masks * _grid_coord(height)[:, None]).sum(axis=(1, 2)) / area
    cx = (masks * _grid_coord(width)[None, :]).sum(axis=(1, 2)) / area
    row = np.minimum((cy / height * grid).astype(np.int64), grid - 1)
    col = np.minimum((cx / width * grid).astype(np.int64), grid - 1)
    return row * grid + col


def _grid_coord(size: int) -> np.ndarray:
    """Pixel centres ``0.5 .. size - 0.5``."""
    return np.arange(size, dtype=np.float64) + 0.5


TARGET_TASKS: Dict[str, SyntheticTask] = {
    task.name: task
    for task in (
        SyntheticTask('counting', 6, render_counting, 'clevr_count'),
        SyntheticTask('location', 8, render_location, 'dsprites_loc'),
        SyntheticTask('orientation', 8, render_orientation, 'dsprites_ori'),
        SyntheticTask('texture', len(TEXTURES), render_texture, 'dtd',
                      has_objects=False),
    )
}
SOURCE_TASK = SyntheticTask('shapes', len(SHAPES) * len(COLOUR_FAMILIES),
                            render_shapes, 'imagenet')


def generate(task: SyntheticTask, num: int, seed: int,
             return_masks: bool = False) -> Tuple[np.ndarray, ...]:
    """Render ``num`` class-balanced images of ``task``.

    Args:
        task (SyntheticTask): What to render.
        num (int): Number of images.
        seed (int): Seed of the generator; equal seeds give equal images.
        return_masks (bool): Also return the object masks.

    Returns:
        tuple: ``uint8 [num, H, W, 3]`` RGB images and ``int64 [num]``
        labels (cycling through the classes, then shuffled); with
        ``return_masks`` also the ``bool [num, H, W]`` object masks.
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num) % task.num_classes)
    images = np.zeros((num, IMG_SIZE, IMG_SIZE, 3), np.uint8)
    masks = np.zeros((num, IMG_SIZE, IMG_SIZE), bool)
    for i, label in enumerate(labels):
        images[i], masks[i] = task.render(rng, int(label))
    if return_masks:
        return images, labels.astype(np.int64), masks
    return images, labels.astype(np.int64)
