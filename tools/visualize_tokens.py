"""Draw which patches a TokenKeepFuseViT keeps, fuses or drops.

Runs images through a trained model whose backbone is ``TokenKeepFuseViT``
and writes a PNG grid: one row per image, the input (after the config's
test pipeline) and then one panel per selection block that reduced tokens
-- kept patches as they are, fused patches tinted blue, dropped patches
black.  Prints the token count after every selection block.

The selection blocks come from the checkpoint (the persistent buffer
``backbone.keep_layer_mask``), else from the config; ``--keep-layers`` and
``--keep-rate`` override both after loading.

Example:
    python tools/visualize_tokens.py CONFIG CHECKPOINT a.jpg b.jpg \\
        --out tokens.png --keep-layers 3 6 9 --keep-rate 0.7
    # a plain ViT config: switch the backbone type
    python tools/visualize_tokens.py CONFIG CHECKPOINT a.jpg \\
        --cfg-options model.backbone.type=TokenKeepFuseViT \\
        --keep-layers 1 3
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional, Tuple

import mmtrpts  # noqa: F401  (stack fixes first; registers components)
import numpy as np
import torch
from mmengine.config import Config, DictAction
from mmengine.dataset import Compose
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmengine.utils import mkdir_or_exist
from mmpretrain.registry import MODELS

from mmtrpts.apis.run_config import runner_model_cfg
from mmtrpts.models.backbones.token_keep_fuse_vit import TokenKeepFuseViT
from mmtrpts.models.utils.token_keep_fuse import num_kept
from mmtrpts.visualization.token_selection import (DROPPED, FUSED, KEPT,
                                                   draw_token_grid,
                                                   patch_states)


class VisualizationError(Exception):
    """A setting that makes the visualisation impossible (exit code 2)."""


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The command line (``sys.argv[1:]`` unless ``argv`` is given)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint (or delta) file')
    parser.add_argument(
        'images', nargs='+', metavar='IMAGE', help='image files')
    parser.add_argument(
        '--out', default='tokens.png', help='output PNG (default: tokens.png)')
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument(
        '--keep-layers',
        type=int,
        nargs='+',
        metavar='LAYER',
        help='0-based selection blocks (replace the '
        "checkpoint's and the config's)")
    parser.add_argument(
        '--keep-rate',
        type=float,
        help='fraction of candidate tokens kept per block')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings in the config')
    return parser.parse_args(argv)


def build_model(cfg: Config, checkpoint: str, device: str) -> torch.nn.Module:
    """Build the model (with its data preprocessor) and load weights.

    ``init_weights`` is not called, so a backbone ``init_cfg`` naming a
    missing pre-trained file does no harm.
    """
    model = MODELS.build(runner_model_cfg(cfg))
    load_checkpoint(model, checkpoint, map_location='cpu')
    return model.to(device).eval()


def configure_backbone(model: torch.nn.Module,
                       config: str,
                       keep_layers: Optional[List[int]] = None,
                       keep_rate: Optional[float] = None) -> TokenKeepFuseViT:
    """Apply the overrides and check that there is selection to show.

    Raises:
        VisualizationError: The backbone is not a ``TokenKeepFuseViT`` or
            has no selection blocks.
    """
    backbone = getattr(model, 'backbone', None)
    if not isinstance(backbone, TokenKeepFuseViT):
        kind = type(backbone).__name__ if backbone is not None else 'none'
        raise VisualizationError(
            f'the backbone of {config} is {kind}, not TokenKeepFuseViT; set '
            "model.backbone.type='TokenKeepFuseViT' in the config or pass "
            '--cfg-options model.backbone.type=TokenKeepFuseViT (a '
            'VisionTransformer checkpoint loads into it), together with '
            '--keep-layers')
    if keep_rate is not None:
        try:
            num_kept(1, keep_rate, backbone.keep_round)
        except ValueError as err:
            raise VisualizationError(f'--keep-rate: {err}') from None
        backbone.keep_rate = keep_rate
    if keep_layers is not None:
        try:
            backbone.set_keep_layers(keep_layers)
        except ValueError as err:
            raise VisualizationError(f'--keep-layers: {err}') from None
    if not backbone.keep_layers:
        raise VisualizationError(
            f'the TokenKeepFuseViT of {config} has no selection blocks '
            '(neither the checkpoint\'s keep_layer_mask nor '
            'model.backbone.keep_layers names any); pass e.g. '
            f'--keep-layers {_example_layers(backbone.num_layers)}, or set '
            'model.backbone.keep_layers in the config (the checkpoint\'s '
            'keep_layer_mask, when it has one, replaces the config\'s)')
    return backbone


def _example_layers(num_layers: int) -> str:
    """E.g. ``3 6 9`` for 12 layers."""
    step = max(1, num_layers // 4)
    return ' '.join(str(i) for i in range(step, num_layers, step)[:3])


def build_test_pipeline(cfg: Config) -> Compose:
    """The config's test pipeline, loading images from ``img_path``."""
    pipeline = None
    dataloader = cfg.get('test_dataloader')
    if dataloader is not None:
        pipeline = dataloader.get('dataset', {}).get('pipeline')
    if pipeline is None:
        pipeline = cfg.get('test_pipeline')
    if pipeline is None:
        raise VisualizationError(
            'the config has neither test_dataloader.dataset.pipeline nor '
            'test_pipeline')
    pipeline = [dict(step) for step in pipeline]
    if not pipeline or 'LoadImage' not in str(pipeline[0].get('type')):
        pipeline.insert(0, dict(type='LoadImageFromFile'))
    return Compose(pipeline)


def displayed_image(inputs: torch.Tensor) -> np.ndarray:
    """The packed ``[C, H, W]`` BGR input as an ``[H, W, 3]`` RGB array."""
    image = inputs.detach().cpu().numpy().transpose(1, 2, 0)
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[..., 2::-1])


def run_images(
    model: torch.nn.Module, backbone: TokenKeepFuseViT, pipeline: Compose,
    images: List[str]
) -> Tuple[List[np.ndarray], List[dict], Tuple[int, int], List[str]]:
    """One forward per image, recording the token assignments.

    Returns:
        tuple: The shown images, the records (assignments concatenated
        over the images), the patch grid and per image a prediction label
        (empty when the model gives none).
    """
    grids = []
    handle = backbone.patch_embed.register_forward_hook(
        lambda module, args, output: grids.append(tuple(output[1])))
    backbone.record_tokens = True
    shown, per_image, predictions = [], [], []
    classes = (getattr(model, 'dataset_meta', None) or {}).get('classes')
    try:
        for path in images:
            packed = pipeline(dict(img_path=path))
            shown.append(displayed_image(packed['inputs']))
            data = model.data_preprocessor(
                dict(
                    inputs=[packed['inputs']],
                    data_samples=[packed['data_samples']]), False)
            with torch.no_grad():
                samples = model(
                    data['inputs'], data['data_samples'], mode='predict')
            predictions.append(_prediction(samples, classes))
            per_image.append([dict(r) for r in backbone.token_records])
    finally:
        handle.remove()
        backbone.record_tokens = False
    if len(set(grids)) != 1:
        raise VisualizationError(
            f'the images give different patch grids {sorted(set(grids))}; '
            'use a test pipeline that resizes to a fixed size')
    records = []
    for block in zip(*per_image):
        records.append(
            dict(
                layer=block[0]['layer'],
                num_tokens=block[0]['num_tokens'],
                assignment=torch.cat([r['assignment'] for r in block])))
    return shown, records, grids[0], predictions


def _prediction(samples, classes) -> str:
    """``pred <class> (<score>)`` of the first sample, or ''."""
    sample = samples[0] if isinstance(samples, (list, tuple)) else None
    if sample is None or 'pred_label' not in sample:
        return ''
    label = int(sample.pred_label[0])
    score = float(sample.pred_score[label]) if 'pred_score' in sample \
        else None
    name = classes[label] if classes and label < len(classes) else label
    return f'pred {name}' + (f' ({score:.2f})' if score is not None else '')


def token_report(backbone: TokenKeepFuseViT, records: List[dict],
                 states: List[np.ndarray], num_patches: int) -> List[str]:
    """Lines describing the token count after every selection block."""
    lines = [
        f'keep_rate={backbone.keep_rate} ({backbone.keep_round}), '
        f'fuse={backbone.fuse!r}, selection blocks '
        f'{backbone.keep_layers}, {num_patches} patches'
    ]
    by_layer = {r['layer']: (r, s) for r, s in zip(records, states)}
    tokens = backbone.num_extra_tokens + num_patches
    for layer in backbone.keep_layers:
        if layer not in by_layer:
            lines.append(f'block {layer}: {tokens} -> {tokens} tokens '
                         '(nothing to reduce)')
            continue
        record, state = by_layer[layer]
        mean = [
            float((state == code).sum()) / state.shape[0]
            for code in (KEPT, FUSED, DROPPED)
        ]
        lines.append(
            f'block {layer}: {tokens} -> {record["num_tokens"]} tokens; '
            f'patches per image: {mean[0]:g} kept, {mean[1]:g} fused, '
            f'{mean[2]:g} dropped')
        tokens = record['num_tokens']
    return lines


def main(argv: Optional[List[str]] = None) -> None:
    """Build, run, draw and report; exit code 2 on a setting error."""
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    try:
        model = build_model(cfg, args.checkpoint, args.device)
        backbone = configure_backbone(model, args.config, args.keep_layers,
                                      args.keep_rate)
        shown, records, grid, predictions = run_images(
            model, backbone, build_test_pipeline(cfg), args.images)
        if not records:
            raise VisualizationError(
                f'no selection block reduced tokens (keep_rate='
                f'{backbone.keep_rate} keeps every candidate); lower '
                '--keep-rate')
    except VisualizationError as err:
        print(f'error: {err}', file=sys.stderr)
        sys.exit(2)
    states = patch_states(records, grid, backbone.fuse)
    height, width = shown[0].shape[:2]
    patch_size = (height // grid[0], width // grid[1])
    stride = getattr(
        getattr(backbone.patch_embed, 'projection', None), 'stride', None)
    if stride is not None:
        patch_size = tuple(int(s) for s in stride)
    titles = [
        osp.basename(path) + (f'\n{pred}' if pred else '')
        for path, pred in zip(args.images, predictions)
    ]
    out_dir = osp.dirname(osp.abspath(args.out))
    mkdir_or_exist(out_dir)
    draw_token_grid(
        shown,
        states, [r['layer'] for r in records],
        patch_size,
        args.out,
        titles=titles,
        num_tokens=[r['num_tokens'] for r in records])
    for line in token_report(backbone, records, states, grid[0] * grid[1]):
        print(line)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
