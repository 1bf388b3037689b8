"""Draw which patches a TokenKeepFuseViT keeps, fuses or drops.

Runs images through a trained model whose backbone is ``TokenKeepFuseViT``
and writes a PNG grid: one row per image, the input (after the config's
test pipeline) and then one panel per selection block that reduced tokens
-- kept patches as they are, fused patches tinted blue, dropped patches
black.  Prints the token count after every selection block.  With
``--masks`` (``bool [N, H, W]`` object masks of the images, in order, at
their own resolution) the panels outline the object and the figure's title
and the output give the share of fused patches on the object against the
object's area (``mmtrpts.visualization.fused_object_share`` of the last
selection block).  The model side lives in
``mmtrpts.apis.token_inspection``.

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
    # with object masks: outlines and the faithfulness score
    python tools/visualize_tokens.py CONFIG CHECKPOINT a.png b.png \\
        --masks masks.npy
"""
import argparse
import sys
from typing import List, Optional

import mmtrpts  # noqa: F401  (stack fixes first; registers components)
import numpy as np
import torch
from mmengine.config import DictAction

from mmtrpts.apis.token_inspection import (TokenInspectionError,
                                           draw_inspection,
                                           draw_tokens_with_faithfulness,
                                           inspect_tokens, token_report)


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
        '--masks',
        metavar='FILE.npy',
        help='bool [N, H, W] object masks of the images, in order: outline '
        'the objects and report the share of fused patches on them')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings in the config')
    return parser.parse_args(argv)


def load_masks(path: str) -> np.ndarray:
    """The ``--masks`` array (checked against the images later)."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise TokenInspectionError(f'--masks {path}: {err}') from None


def main(argv: Optional[List[str]] = None) -> None:
    """Inspect, draw and report; exit code 2 on a setting error."""
    args = parse_args(argv)
    share = None
    try:
        masks = load_masks(args.masks) if args.masks else None
        inspection = inspect_tokens(
            args.config,
            args.checkpoint,
            args.images,
            device=args.device,
            keep_layers=args.keep_layers,
            keep_rate=args.keep_rate,
            cfg_options=args.cfg_options)
        if masks is None:
            draw_inspection(inspection, args.out)
        else:
            share = draw_tokens_with_faithfulness(
                inspection, masks, args.out, num_images=None)
    except TokenInspectionError as err:
        print(f'error: {err}', file=sys.stderr)
        sys.exit(2)
    for line in token_report(inspection):
        print(line)
    if share is not None:
        print(f'object faithfulness after block {inspection.layers[-1]}: '
              f'{share}')
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
