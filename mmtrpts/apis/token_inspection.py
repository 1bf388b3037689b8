"""Run images through a TokenKeepFuseViT and collect its token states.

:func:`inspect_tokens` builds a model from a config and a checkpoint, sets
the selection blocks and keep rate if asked, runs image files through the
config's test pipeline in batches and returns a :class:`TokenInspection`:
the images as the model saw them, its predictions and, per selection block
that reduced tokens, which patches it kept, fused or dropped
(:func:`mmtrpts.visualization.patch_states`).

From an inspection, :func:`token_report` describes the token counts,
:func:`token_faithfulness` measures how much of what was fused lies on the
object (given object masks), :func:`draw_inspection` draws the grid of
:func:`mmtrpts.visualization.draw_token_grid` and
:func:`draw_tokens_with_faithfulness` does both, with the score as the
figure's title.  ``tools/visualize_tokens.py`` is the command line.
"""
import copy
import os.path as osp
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmengine.utils import mkdir_or_exist
from mmpretrain.registry import MODELS

from ..models.backbones.token_keep_fuse_vit import TokenKeepFuseViT
from ..models.utils.token_keep_fuse import num_kept
from ..visualization.token_selection import (DROPPED, FUSED, KEPT,
                                             FusedObjectShare, draw_token_grid,
                                             fused_object_share, patch_states)
from .run_config import runner_model_cfg


class TokenInspectionError(ValueError):
    """A setting or input that makes the inspection impossible."""


@dataclass(frozen=True)
class TokenInspection:
    """Images run through a TokenKeepFuseViT, with its token states.

    Attributes:
        image_files (List[str]): The images, in the given order.
        images (List[np.ndarray]): Per image ``[H, W, 3]`` RGB ``uint8``
            as the model saw it (after the test pipeline).
        predictions (List[str]): Per image ``pred <class> (<score>)``, or
            '' when the model gives no label.
        states (List[np.ndarray]): Per selection block that reduced tokens
            the ``[N, h, w]`` codes of
            :func:`mmtrpts.visualization.patch_states` (kept, fused,
            dropped), in depth order; the last one holds every fused patch.
        layers (List[int]): Per entry of ``states`` its 0-based block.
        num_tokens (List[int]): Per entry of ``states`` the token count
            after the block (extra and fused tokens included).
        patch_size (Tuple[int, int]): Pixels per patch in ``images``.
        patch_resolution (Tuple[int, int]): The patch grid ``(h, w)``.
        keep_layers (List[int]): All selection blocks of the backbone (a
            block that had nothing to reduce has no entry in ``states``).
        keep_rate (float): The backbone's keep rate.
        keep_round (str): How the kept count is rounded.
        fuse (str): The backbone's fuse mode.
        num_extra_tokens (int): Tokens before the patches ([CLS]).
    """
    image_files: List[str]
    images: List[np.ndarray]
    predictions: List[str]
    states: List[np.ndarray]
    layers: List[int]
    num_tokens: List[int]
    patch_size: Tuple[int, int]
    patch_resolution: Tuple[int, int]
    keep_layers: List[int]
    keep_rate: float
    keep_round: str
    fuse: str
    num_extra_tokens: int


def inspect_tokens(config: Union[str, Config],
                   checkpoint: str,
                   image_files: Sequence[str],
                   device: str = 'cpu',
                   keep_layers: Optional[Sequence[int]] = None,
                   keep_rate: Optional[float] = None,
                   cfg_options: Optional[dict] = None,
                   batch_size: int = 250) -> TokenInspection:
    """Run image files through a trained TokenKeepFuseViT model.

    The selection blocks come from the checkpoint (the persistent buffer
    ``backbone.keep_layer_mask``), else from the config; ``keep_layers``
    and ``keep_rate`` override both after loading.  The checkpoint is read
    by mmtrpts' safe loader (``weights_only``, deltas merged).
    ``init_weights`` is not called, so a backbone ``init_cfg`` naming a
    missing pre-trained file does no harm.

    Args:
        config (str | Config): A config file or a loaded config (not
            modified).
        checkpoint (str): A checkpoint (or delta) file.
        image_files (Sequence[str]): The images; the test pipeline must
            bring them to one size.
        device (str): Where to run the model. Defaults to 'cpu'.
        keep_layers (Sequence[int], optional): 0-based selection blocks,
            replacing the checkpoint's and the config's.
        keep_rate (float, optional): Fraction of candidate tokens kept per
            selection block.
        cfg_options (dict, optional): Settings merged into the config
            (``Config.merge_from_dict``).
        batch_size (int): Images per forward. Defaults to 250.

    Returns:
        TokenInspection: The shown images, predictions and token states.

    Raises:
        TokenInspectionError: The backbone is not a TokenKeepFuseViT, has
            no selection blocks or reduces no tokens, an override is
            invalid, the images differ in size after the pipeline, or
            there is no image.
    """
    if not image_files:
        raise TokenInspectionError('no image files given')
    if batch_size < 1:
        raise TokenInspectionError(f'batch_size must be >= 1, got '
                                   f'{batch_size}')
    if isinstance(config, str):
        cfg, config_name = Config.fromfile(config), config
    else:
        cfg = copy.deepcopy(config)
        config_name = config.filename or 'the config'
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    model = MODELS.build(runner_model_cfg(cfg))
    load_checkpoint(model, checkpoint, map_location='cpu', logger='current')
    model = model.to(device).eval()
    backbone = configure_backbone(model, config_name, keep_layers, keep_rate)
    images, predictions, records, grid = _run_batches(
        model, backbone, _build_test_pipeline(cfg), list(image_files),
        batch_size)
    if not records:
        raise TokenInspectionError(
            f'no selection block reduced tokens (keep_rate='
            f'{backbone.keep_rate} keeps every candidate); lower the keep '
            'rate (keep_rate, --keep-rate)')
    height, width = images[0].shape[:2]
    stride = getattr(
        getattr(backbone.patch_embed, 'projection', None), 'stride', None)
    if stride is not None:
        patch_size = tuple(int(s) for s in stride)
    else:
        patch_size = (height // grid[0], width // grid[1])
    return TokenInspection(
        image_files=list(image_files),
        images=images,
        predictions=predictions,
        states=patch_states(records, grid, backbone.fuse),
        layers=[record['layer'] for record in records],
        num_tokens=[record['num_tokens'] for record in records],
        patch_size=patch_size,
        patch_resolution=grid,
        keep_layers=backbone.keep_layers,
        keep_rate=backbone.keep_rate,
        keep_round=backbone.keep_round,
        fuse=backbone.fuse,
        num_extra_tokens=backbone.num_extra_tokens)


def configure_backbone(model: torch.nn.Module,
                       config_name: str,
                       keep_layers: Optional[Sequence[int]] = None,
                       keep_rate: Optional[float] = None) -> TokenKeepFuseViT:
    """Apply the overrides and check that there is selection to inspect.

    Args:
        model (torch.nn.Module): The built classifier.
        config_name (str): The config, as named in error messages.
        keep_layers (Sequence[int], optional): Replacement selection
            blocks.
        keep_rate (float, optional): Replacement keep rate.

    Returns:
        TokenKeepFuseViT: The model's backbone, configured.

    Raises:
        TokenInspectionError: The backbone is not a ``TokenKeepFuseViT``,
            an override is invalid or there are no selection blocks.
    """
    backbone = getattr(model, 'backbone', None)
    if not isinstance(backbone, TokenKeepFuseViT):
        kind = type(backbone).__name__ if backbone is not None else 'none'
        raise TokenInspectionError(
            f'the backbone of {config_name} is {kind}, not TokenKeepFuseViT; '
            "set model.backbone.type='TokenKeepFuseViT' in the config or "
            'pass --cfg-options model.backbone.type=TokenKeepFuseViT (a '
            'VisionTransformer checkpoint loads into it), together with '
            'selection blocks (keep_layers, --keep-layers)')
    if keep_rate is not None:
        try:
            num_kept(1, keep_rate, backbone.keep_round)
        except ValueError as err:
            raise TokenInspectionError(f'keep rate: {err}') from None
        backbone.keep_rate = keep_rate
    if keep_layers is not None:
        try:
            backbone.set_keep_layers(keep_layers)
        except ValueError as err:
            raise TokenInspectionError(f'keep layers: {err}') from None
    if not backbone.keep_layers:
        raise TokenInspectionError(
            f'the TokenKeepFuseViT of {config_name} has no selection blocks '
            "(neither the checkpoint's keep_layer_mask nor "
            'model.backbone.keep_layers names any); pass selection blocks, '
            f'e.g. --keep-layers {_example_layers(backbone.num_layers)}, or '
            "set model.backbone.keep_layers in the config (the checkpoint's "
            "keep_layer_mask, when it has one, replaces the config's)")
    return backbone


def _example_layers(num_layers: int) -> str:
    """E.g. ``3 6 9`` for 12 layers."""
    step = max(1, num_layers // 4)
    return ' '.join(str(i) for i in range(step, num_layers, step)[:3])


def _build_test_pipeline(cfg: Config) -> Compose:
    """The config's test pipeline, loading images from ``img_path``."""
    pipeline = None
    dataloader = cfg.get('test_dataloader')
    if dataloader is not None:
        pipeline = dataloader.get('dataset', {}).get('pipeline')
    if pipeline is None:
        pipeline = cfg.get('test_pipeline')
    if pipeline is None:
        raise TokenInspectionError(
            'the config has neither test_dataloader.dataset.pipeline nor '
            'test_pipeline')
    pipeline = [dict(step) for step in pipeline]
    if not pipeline or 'LoadImage' not in str(pipeline[0].get('type')):
        pipeline.insert(0, dict(type='LoadImageFromFile'))
    return Compose(pipeline)


def _displayed_image(inputs: torch.Tensor) -> np.ndarray:
    """The packed ``[C, H, W]`` BGR input as an ``[H, W, 3]`` RGB array."""
    image = inputs.detach().cpu().numpy().transpose(1, 2, 0)
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[..., 2::-1])


def _run_batches(
    model: torch.nn.Module, backbone: TokenKeepFuseViT, pipeline: Compose,
    image_files: List[str], batch_size: int
) -> Tuple[List[np.ndarray], List[str], List[dict], Tuple[int, int]]:
    """Forward the images in batches, recording the token assignments.

    Returns:
        tuple: The shown images, per image a prediction label, the records
        (assignments concatenated over all images) and the patch grid.
    """
    grids = []
    handle = backbone.patch_embed.register_forward_hook(
        lambda module, args, output: grids.append(tuple(output[1])))
    backbone.record_tokens = True
    classes = (getattr(model, 'dataset_meta', None) or {}).get('classes')
    images, predictions, batch_records = [], [], []
    input_shape = None
    try:
        for start in range(0, len(image_files), batch_size):
            packed = []
            for path in image_files[start:start + batch_size]:
                sample = pipeline(dict(img_path=path))
                if input_shape is None:
                    input_shape = sample['inputs'].shape
                if sample['inputs'].shape != input_shape:
                    raise TokenInspectionError(
                        f'{path} is {tuple(sample["inputs"].shape)} after '
                        f'the test pipeline, {image_files[0]} '
                        f'{tuple(input_shape)}; use a test pipeline that '
                        'resizes to a fixed size')
                packed.append(sample)
            data = model.data_preprocessor(
                dict(
                    inputs=[sample['inputs'] for sample in packed],
                    data_samples=[sample['data_samples']
                                  for sample in packed]), False)
            with torch.no_grad():
                results = model(
                    data['inputs'], data['data_samples'], mode='predict')
            images += [_displayed_image(sample['inputs']) for sample in packed]
            predictions += [_prediction(result, classes) for result in results]
            batch_records.append([dict(r) for r in backbone.token_records])
    finally:
        handle.remove()
        backbone.record_tokens = False
    records = [
        dict(
            layer=blocks[0]['layer'],
            num_tokens=blocks[0]['num_tokens'],
            assignment=torch.cat([block['assignment'] for block in blocks]))
        for blocks in zip(*batch_records)
    ]
    return images, predictions, records, grids[0]


def _prediction(result, classes: Optional[Sequence[str]]) -> str:
    """``pred <class> (<score>)`` of a predicted data sample, or ''."""
    if 'pred_label' not in result:
        return ''
    label = int(result.pred_label[0])
    score = float(result.pred_score[label]) if 'pred_score' in result \
        else None
    name = classes[label] if classes and label < len(classes) else label
    return f'pred {name}' + (f' ({score:.2f})' if score is not None else '')


def token_report(inspection: TokenInspection) -> List[str]:
    """Lines describing the token count after every selection block.

    Args:
        inspection (TokenInspection): From :func:`inspect_tokens`.

    Returns:
        List[str]: The backbone's settings, then per selection block the
        token counts before and after it and the mean kept / fused /
        dropped patches per image.
    """
    num_patches = int(np.prod(inspection.patch_resolution))
    lines = [
        f'keep_rate={inspection.keep_rate} ({inspection.keep_round}), '
        f'fuse={inspection.fuse!r}, selection blocks '
        f'{inspection.keep_layers}, {num_patches} patches'
    ]
    by_layer = {
        layer: (count, state)
        for layer, count, state in zip(
            inspection.layers, inspection.num_tokens, inspection.states)
    }
    tokens = inspection.num_extra_tokens + num_patches
    for layer in inspection.keep_layers:
        if layer not in by_layer:
            lines.append(f'block {layer}: {tokens} -> {tokens} tokens '
                         '(nothing to reduce)')
            continue
        count, state = by_layer[layer]
        mean = [
            float((state == code).sum()) / state.shape[0]
            for code in (KEPT, FUSED, DROPPED)
        ]
        lines.append(f'block {layer}: {tokens} -> {count} tokens; '
                     f'patches per image: {mean[0]:g} kept, {mean[1]:g} '
                     f'fused, {mean[2]:g} dropped')
        tokens = count
    return lines


def _shown_masks(inspection: TokenInspection, masks: np.ndarray) -> np.ndarray:
    """Object masks at the shown images' size (nearest neighbour).

    The masks are at the image files' own resolution; a test pipeline that
    resizes is followed, one that crops is not.
    """
    masks = np.asarray(masks)
    num_images = len(inspection.images)
    if masks.dtype != bool or masks.ndim != 3 or len(masks) != num_images:
        raise TokenInspectionError(
            f'masks are {masks.dtype} {masks.shape}; expected bool '
            f'[{num_images}, H, W], one per image in the images\' order')
    height, width = inspection.images[0].shape[:2]
    source_h, source_w = masks.shape[1:]
    if (source_h, source_w) == (height, width):
        return masks
    # the source pixel whose centre is nearest to each shown pixel's centre
    rows = ((np.arange(height) + 0.5) * source_h / height).astype(np.int64)
    cols = ((np.arange(width) + 0.5) * source_w / width).astype(np.int64)
    return masks[:, rows[:, None], cols[None, :]]


def token_faithfulness(inspection: TokenInspection,
                       masks: np.ndarray) -> FusedObjectShare:
    """How much of what the selection blocks fused lies on the object.

    :func:`mmtrpts.visualization.fused_object_share` of the last selection
    block (which holds every fused patch), pooled over all images.

    Args:
        inspection (TokenInspection): From :func:`inspect_tokens`.
        masks (np.ndarray): ``bool [N, H, W]`` object pixels of the
            inspected images, in order, at the image files' resolution
            (resized like the images when the test pipeline resizes).

    Returns:
        FusedObjectShare: The fused patches' object share against the
        object's area.

    Raises:
        TokenInspectionError: The masks do not fit the images, no patch
            was fused or no mask has an object pixel.
    """
    shown = _shown_masks(inspection, masks)
    try:
        return fused_object_share(inspection.states[-1], shown,
                                  inspection.patch_size)
    except ValueError as err:
        raise TokenInspectionError(f'object faithfulness: {err}') from None


def draw_inspection(inspection: TokenInspection,
                    out_file: str,
                    num_images: Optional[int] = None,
                    masks: Optional[np.ndarray] = None,
                    subtitle: Optional[str] = None) -> None:
    """Write the token grid PNG of (the first) inspected images.

    One row per image (titled by its file name and prediction), one
    column per selection block; see
    :func:`mmtrpts.visualization.draw_token_grid`.

    Args:
        inspection (TokenInspection): From :func:`inspect_tokens`.
        out_file (str): Where to write the PNG (folders are created).
        num_images (int, optional): Draw only the first ``num_images``;
            all by default.
        masks (np.ndarray, optional): ``bool [N, H, W]`` object masks of
            all inspected images, as for :func:`token_faithfulness`;
            outlined in every panel.
        subtitle (str, optional): A title for the whole figure.
    """
    count = len(inspection.images)
    if num_images is not None:
        count = min(count, num_images)
    object_masks = None
    if masks is not None:
        object_masks = _shown_masks(inspection, masks)[:count]
    titles = [
        osp.basename(path) + (f'\n{prediction}' if prediction else '')
        for path, prediction in zip(inspection.image_files[:count],
                                    inspection.predictions[:count])
    ]
    mkdir_or_exist(osp.dirname(osp.abspath(out_file)))
    draw_token_grid(
        inspection.images[:count],
        [state[:count] for state in inspection.states],
        inspection.layers,
        inspection.patch_size,
        out_file,
        titles=titles,
        num_tokens=inspection.num_tokens,
        object_masks=object_masks,
        subtitle=subtitle)


def draw_tokens_with_faithfulness(
        inspection: TokenInspection,
        masks: np.ndarray,
        out_file: str,
        num_images: Optional[int] = 4) -> FusedObjectShare:
    """Score all inspected images, draw the first few with outlines.

    Args:
        inspection (TokenInspection): From :func:`inspect_tokens`.
        masks (np.ndarray): ``bool [N, H, W]`` object masks of all
            inspected images, as for :func:`token_faithfulness`.
        out_file (str): Where to write the PNG (folders are created).
        num_images (int, optional): How many images to draw (None: all).
            Defaults to 4.

    Returns:
        FusedObjectShare: :func:`token_faithfulness` over all images, also
        the figure's title.

    Raises:
        TokenInspectionError: As :func:`token_faithfulness`.
    """
    share = token_faithfulness(inspection, masks)
    draw_inspection(
        inspection,
        out_file,
        num_images=num_images,
        masks=masks,
        subtitle=f'after block {inspection.layers[-1]}, over '
        f'{share.num_images} images: {share}')
    return share
