"""Which patches a token keep/fuse ViT keeps, fuses or drops.

:class:`~mmtrpts.models.backbones.TokenKeepFuseViT` with
``record_tokens = True`` leaves, after a forward, one record per selection
block that reduced tokens::

    dict(layer=i, assignment=LongTensor[B, P], num_tokens=int)

where ``assignment[b, p]`` is the index of the token that holds original
patch ``p`` (row-major over the patch grid) after block ``i``, or -1 when
the patch was dropped (``fuse='drop'``).  :func:`patch_states` turns the
records into one code per patch and block; :func:`draw_token_grid` draws
them over the input images; :func:`fused_object_share` measures how much
of what a block fused lies on the object (given object masks).

Codes:

* ``KEPT`` (0): the patch's token survives the block and stands for that
  patch alone.
* ``FUSED`` (1): the patch is part of a fused token -- the block's own
  fused token (the last token, when fusing is on) or an earlier fused token
  that this block kept (a kept token that holds more than one patch).
* ``DROPPED`` (2): the patch's token was discarded (``fuse='drop'``).
"""
import textwrap
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

KEPT = 0
FUSED = 1
DROPPED = 2
STATE_NAMES = ('kept', 'fused', 'dropped')

# Display: fused patches are blended towards this colour, dropped ones
# blacked out.
FUSED_TINT = np.array([0.15, 0.35, 1.0])
FUSED_ALPHA = 0.6
# Object outlines: visible on dark and bright images and on the blue tint.
OBJECT_OUTLINE = '#ffd000'
# How many characters of a 9 pt subtitle fit on an inch of figure width.
SUBTITLE_CHARS_PER_INCH = 14


def _as_numpy(array) -> np.ndarray:
    """A tensor (on any device) or array-like as a numpy array."""
    if hasattr(array, 'detach'):
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def patch_states(records: Sequence[dict],
                 patch_resolution: Tuple[int, int],
                 fuse: str) -> List[np.ndarray]:
    """Per selection block, whether each patch is kept, fused or dropped.

    Args:
        records (Sequence[dict]): ``backbone.token_records`` -- per block
            ``dict(layer, assignment, num_tokens)`` with ``assignment`` a
            ``[B, P]`` tensor or array of token indices (-1: dropped).
        patch_resolution (Tuple[int, int]): The patch grid ``(H, W)``;
            ``H * W`` must equal ``P``.
        fuse (str): The backbone's ``fuse`` mode; with ``'drop'`` there is
            no fused token, otherwise the last token (``num_tokens - 1``)
            is the block's fused token.

    Returns:
        List[np.ndarray]: Per record an ``int64`` array ``[B, H, W]`` of
        :data:`KEPT`, :data:`FUSED` or :data:`DROPPED`.
    """
    grid_h, grid_w = (int(s) for s in patch_resolution)
    states = []
    for record in records:
        assignment = _as_numpy(record['assignment']).astype(np.int64)
        if assignment.ndim != 2 or assignment.shape[1] != grid_h * grid_w:
            raise ValueError(
                f'assignment of block {record.get("layer")} has shape '
                f'{assignment.shape}; expected [B, {grid_h * grid_w}] for a '
                f'{grid_h}x{grid_w} patch grid')
        num_tokens = int(record['num_tokens'])
        if assignment.max(initial=-1) >= num_tokens:
            raise ValueError(
                f'assignment of block {record.get("layer")} refers to token '
                f'{assignment.max()} but the block has {num_tokens} tokens')
        dropped = assignment < 0
        # how many patches the token of each patch stands for
        counts = np.zeros((assignment.shape[0], num_tokens), dtype=np.int64)
        rows = np.broadcast_to(
            np.arange(assignment.shape[0])[:, None], assignment.shape)
        np.add.at(counts, (rows[~dropped], assignment[~dropped]), 1)
        shared = np.take_along_axis(
            counts, np.where(dropped, 0, assignment), axis=1) > 1
        fused = shared & ~dropped
        if fuse != 'drop':
            fused |= assignment == num_tokens - 1
        state = np.full(assignment.shape, KEPT, dtype=np.int64)
        state[fused] = FUSED
        state[dropped] = DROPPED
        states.append(state.reshape(-1, grid_h, grid_w))
    return states


def patch_object_coverage(
        masks: np.ndarray, patch_size: Union[int, Tuple[int,
                                                       int]]) -> np.ndarray:
    """Per image and patch, the fraction of the patch's pixels on the object.

    Args:
        masks (np.ndarray): ``bool [B, H, W]`` object pixels; ``H`` and
            ``W`` must be multiples of the patch size (the caller checks).
        patch_size (int | Tuple[int, int]): Pixels per patch.

    Returns:
        np.ndarray: ``float [B, H / patch_h, W / patch_w]`` in ``[0, 1]``.
    """
    patch_h, patch_w = _pair(patch_size)
    num_images, height, width = masks.shape
    return masks.reshape(num_images, height // patch_h, patch_h,
                         width // patch_w, patch_w).mean(axis=(2, 4))


@dataclass(frozen=True)
class FusedObjectShare:
    """How much of what a block fused lies on the object.

    Attributes:
        fused_on_object (float): Over all images, the mean object coverage
            of a fused patch (the share of fused patch pixels on the
            object).
        object_area (float): The mean object coverage of any patch -- the
            object's share of the pixels, what fusing patches uniformly at
            random gives in expectation.
        ratio (float): ``fused_on_object / object_area``; 0 when nothing
            on the object was fused, 1 at random, above 1 when the block
            fuses the object preferentially.
        num_fused (int): Fused patches, summed over the images.
        num_images (int): Images pooled.
    """
    fused_on_object: float
    object_area: float
    ratio: float
    num_fused: int
    num_images: int

    def __str__(self) -> str:
        return (f'{100 * self.fused_on_object:.1f}% of fused patches on the '
                f'object vs {100 * self.object_area:.1f}% object area '
                f'(random): {self.ratio:.2f}x')


def fused_object_share(
        state: np.ndarray, masks: np.ndarray,
        patch_size: Union[int, Tuple[int, int]]) -> FusedObjectShare:
    """Compare the object coverage of fused patches with the object area.

    A patch's coverage is the fraction of its pixels on the object.  Pooled
    over the images, the mean coverage of the :data:`FUSED` patches is set
    against the mean coverage of all patches of the grid (kept, fused and
    dropped), which is what a block fusing uniformly at random would reach.
    Pass the state of the last selection block: fused states carry over,
    so it holds every patch fused so far.

    Args:
        state (np.ndarray): One block's ``[B, h, w]`` codes from
            :func:`patch_states`.
        masks (np.ndarray): ``bool [B, H, W]`` object pixels at the
            model's input resolution, ``H = h * patch_h`` and
            ``W = w * patch_w``.
        patch_size (int | Tuple[int, int]): Pixels per patch.

    Returns:
        FusedObjectShare: The pooled shares and their ratio.

    Raises:
        ValueError: The shapes do not match, a mask is not the patch grid
            times the patch size, no patch is fused or no pixel is on the
            object.
    """
    patch_h, patch_w = _pair(patch_size)
    state = np.asarray(state)
    masks = np.asarray(masks)
    if state.ndim != 3:
        raise ValueError(f'state has shape {state.shape}; expected [B, h, w]')
    if masks.ndim != 3 or masks.dtype != bool:
        raise ValueError(f'masks are {masks.dtype} {masks.shape}; expected '
                         'bool [B, H, W]')
    num_images, grid_h, grid_w = state.shape
    if masks.shape[0] != num_images:
        raise ValueError(f'{masks.shape[0]} masks for the {num_images} images '
                         f'of a state of shape {state.shape}')
    height, width = masks.shape[1:]
    if height % patch_h or width % patch_w:
        raise ValueError(f'masks of {height}x{width} pixels are not a '
                         f'multiple of the {patch_h}x{patch_w} patch size')
    if (height // patch_h, width // patch_w) != (grid_h, grid_w):
        raise ValueError(
            f'masks of {height}x{width} pixels make a {height // patch_h}x'
            f'{width // patch_w} grid of {patch_h}x{patch_w} patches; the '
            f'state has a {grid_h}x{grid_w} grid (expected masks of '
            f'{grid_h * patch_h}x{grid_w * patch_w} pixels)')
    coverage = patch_object_coverage(masks, (patch_h, patch_w))
    fused = state == FUSED
    num_fused = int(fused.sum())
    if num_fused == 0:
        raise ValueError('no patch is fused (a backbone that drops tokens '
                         'instead, or one that keeps every token)')
    object_area = float(coverage.mean())
    if object_area == 0:
        raise ValueError('no mask has an object pixel')
    fused_on_object = float(coverage[fused].sum()) / num_fused
    return FusedObjectShare(
        fused_on_object=fused_on_object,
        object_area=object_area,
        ratio=fused_on_object / object_area,
        num_fused=num_fused,
        num_images=num_images)


def _to_float_rgb(image: np.ndarray) -> np.ndarray:
    """An ``[H, W, 3]`` (or ``[H, W]``) image as floats in ``[0, 1]``."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f'expected an [H, W, 3] RGB image, got shape '
                         f'{image.shape}')
    image = image[..., :3]
    if np.issubdtype(image.dtype, np.integer):
        return image.astype(np.float64) / 255.
    return np.clip(image.astype(np.float64), 0., 1.)


def _state_map(state: np.ndarray, image_hw: Tuple[int, int],
               patch_size: Tuple[int, int]) -> np.ndarray:
    """Upsample a ``[h, w]`` patch-state grid to pixel resolution.

    Pixels beyond the grid (an image not a multiple of the patch size) are
    reported as :data:`KEPT` (they are shown unchanged).
    """
    pixel = np.repeat(np.repeat(state, patch_size[0], axis=0),
                      patch_size[1], axis=1)
    out = np.full(image_hw, KEPT, dtype=state.dtype)
    h = min(image_hw[0], pixel.shape[0])
    w = min(image_hw[1], pixel.shape[1])
    out[:h, :w] = pixel[:h, :w]
    return out


def render_states(image: np.ndarray, state: np.ndarray,
                  patch_size: Union[int, Tuple[int, int]]) -> np.ndarray:
    """The image with fused patches tinted and dropped ones blacked out.

    Args:
        image (np.ndarray): ``[H, W, 3]`` RGB, ``uint8`` or floats in
            ``[0, 1]``.
        state (np.ndarray): ``[h, w]`` codes from :func:`patch_states`.
        patch_size (int | Tuple[int, int]): Pixels per patch.

    Returns:
        np.ndarray: ``[H, W, 3]`` floats in ``[0, 1]``.
    """
    patch_size = _pair(patch_size)
    rgb = _to_float_rgb(image)
    pixel_state = _state_map(state, rgb.shape[:2], patch_size)
    out = rgb.copy()
    fused = pixel_state == FUSED
    out[fused] = (1 - FUSED_ALPHA) * rgb[fused] * 0.8 + \
        FUSED_ALPHA * FUSED_TINT
    out[pixel_state == DROPPED] = 0.
    return out


def _pair(value: Union[int, Sequence[int]]) -> Tuple[int, int]:
    """``n`` as ``(n, n)``; a pair as a tuple of ints."""
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    first, second = value
    return int(first), int(second)


def draw_token_grid(images_rgb: Sequence[np.ndarray],
                    states: Sequence[np.ndarray],
                    layers: Sequence[int],
                    patch_size: Union[int, Tuple[int, int]],
                    out_file: str,
                    titles: Optional[Sequence[str]] = None,
                    num_tokens: Optional[Sequence[int]] = None,
                    object_masks: Optional[np.ndarray] = None,
                    subtitle: Optional[str] = None,
                    grid_lines: bool = True,
                    panel_inches: float = 2.0,
                    dpi: int = 100) -> None:
    """Write a PNG: one row per image, one column per selection block.

    The first column shows the image as the model saw it (after the test
    pipeline); each further column the same image after a selection block,
    with kept patches unchanged, fused patches tinted blue and dropped
    patches black.  Column titles read ``block i: N tokens``; under each
    panel the number of patches kept / fused / dropped.  A legend sits
    below the grid.  With ``object_masks`` every panel outlines the object;
    ``subtitle`` (e.g. a faithfulness score) goes above the grid.

    Args:
        images_rgb (Sequence[np.ndarray]): Per image ``[H, W, 3]`` RGB
            (``uint8`` or floats in ``[0, 1]``).
        states (Sequence[np.ndarray]): Per block ``[B, h, w]`` codes from
            :func:`patch_states` (``B == len(images_rgb)``).
        layers (Sequence[int]): Per block its 0-based layer index.
        patch_size (int | Tuple[int, int]): Pixels per patch in the shown
            images.
        out_file (str): Where to write the PNG.
        titles (Sequence[str], optional): Per image a title for its first
            panel (e.g. the file name).
        num_tokens (Sequence[int], optional): Per block the token count
            after it (extra and fused tokens included, the records'
            ``num_tokens``); without it the column titles read
            ``block i``.
        object_masks (np.ndarray, optional): ``bool [B, H, W]`` object
            pixels at the shown images' resolution; outlined in every
            panel.
        subtitle (str, optional): A title for the whole figure, wrapped
            to its width.
        grid_lines (bool): Draw faint patch borders. Defaults to True.
        panel_inches (float): Size of one panel. Defaults to 2.0.
        dpi (int): Resolution of the PNG. Defaults to 100.
    """
    # The figure is drawn on its own Agg canvas: no pyplot, no global
    # backend switch for the caller's process.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    num_images, num_blocks = len(images_rgb), len(states)
    if num_images == 0:
        raise ValueError('no images to draw')
    if len(layers) != num_blocks:
        raise ValueError(f'{len(layers)} layers for {num_blocks} blocks')
    for layer, state in zip(layers, states):
        if state.shape[0] != num_images:
            raise ValueError(f'states of block {layer} cover '
                             f'{state.shape[0]} images, not {num_images}')
    if titles is not None and len(titles) != num_images:
        raise ValueError(f'{len(titles)} titles for {num_images} images')
    if num_tokens is not None and len(num_tokens) != num_blocks:
        raise ValueError(f'{len(num_tokens)} token counts for {num_blocks} '
                         'blocks')
    if object_masks is not None:
        object_masks = np.asarray(object_masks)
        if object_masks.ndim != 3 or object_masks.shape[0] != num_images:
            raise ValueError(f'object_masks have shape {object_masks.shape}; '
                             f'expected [{num_images}, H, W]')
    patch_size = _pair(patch_size)

    cols = num_blocks + 1
    subtitle_lines = textwrap.wrap(
        subtitle or '', width=int(SUBTITLE_CHARS_PER_INCH * panel_inches *
                                  cols))
    subtitle_inches = 0.15 * len(subtitle_lines) + 0.15 * bool(
        subtitle_lines)
    fig = Figure(
        figsize=(panel_inches * cols,
                 (panel_inches + 0.5) * num_images + 0.4 + subtitle_inches),
        layout='constrained')
    FigureCanvasAgg(fig)
    if subtitle_lines:
        fig.suptitle('\n'.join(subtitle_lines), fontsize=9)
    axes = fig.subplots(num_images, cols, squeeze=False)
    for row, image in enumerate(images_rgb):
        rgb = _to_float_rgb(image)
        if object_masks is not None and \
                object_masks.shape[1:] != rgb.shape[:2]:
            raise ValueError(
                f'object mask {row} is {object_masks.shape[1:]} but its '
                f'image is {rgb.shape[:2]}; expected masks at the shown '
                'resolution')
        panels = [rgb] + [
            render_states(rgb, state[row], patch_size) for state in states]
        for col, panel in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(panel, interpolation='nearest')
            ax.set_xticks([])
            ax.set_yticks([])
            if grid_lines:
                _draw_patch_borders(ax, rgb.shape[:2], patch_size)
            if object_masks is not None:
                _draw_outline(ax, object_masks[row])
            if col == 0:
                label = titles[row] if titles is not None else 'input'
                ax.set_title(label, fontsize=8)
                grid = states[0].shape[1:] if states else None
                if grid is not None:
                    ax.set_xlabel(f'{grid[0] * grid[1]} patches',
                                  fontsize=7)
                continue
            state = states[col - 1][row]
            if row == 0:
                title = f'block {layers[col - 1]}'
                if num_tokens is not None:
                    title += f': {num_tokens[col - 1]} tokens'
                ax.set_title(title, fontsize=8)
            counts = [int((state == code).sum())
                      for code in (KEPT, FUSED, DROPPED)]
            ax.set_xlabel(' / '.join(
                f'{n} {name}' for n, name in zip(counts, STATE_NAMES)
                if n or name == 'kept'), fontsize=7)
    handles = [
        Patch(facecolor='white', edgecolor='0.4',
              label='kept (own token)'),
        Patch(facecolor=FUSED_TINT * FUSED_ALPHA + (1 - FUSED_ALPHA) * 0.5,
              edgecolor='0.4', label='fused into a token'),
        Patch(facecolor='black', edgecolor='0.4', label='dropped'),
    ]
    if object_masks is not None:
        handles.append(
            Line2D([], [], color=OBJECT_OUTLINE, label='object (mask)'))
    fig.legend(handles=handles, loc='outside lower center',
               ncol=len(handles), fontsize=8, frameon=False)
    fig.savefig(out_file, dpi=dpi)


def _draw_patch_borders(ax, image_hw: Tuple[int, int],
                        patch_size: Tuple[int, int]) -> None:
    """Faint lines between patches."""
    height, width = image_hw
    style = dict(color='white', alpha=0.25, linewidth=0.4)
    for y in range(patch_size[0], height, patch_size[0]):
        ax.axhline(y - 0.5, **style)
    for x in range(patch_size[1], width, patch_size[1]):
        ax.axvline(x - 0.5, **style)


def _draw_outline(ax, mask: np.ndarray) -> None:
    """The border of the mask's object (nothing for an empty or full mask).

    The contour at level 0.5 runs between object and background pixel
    centres, i.e. along the pixel edges ``imshow`` draws.
    """
    if mask.any() and not mask.all():
        ax.contour(
            mask.astype(np.float64),
            levels=[0.5],
            colors=OBJECT_OUTLINE,
            linewidths=1.0)
