"""Print a config's parameters and FLOPs (attention matmuls counted).

Like mmpretrain's ``tools/analysis_tools/get_flops.py``, but the FLOPs come
from :func:`mmtrpts.complexity.count_flops`, which adds the
``scaled_dot_product_attention`` matmuls that mmengine's counter misses,
and the parameters are split into trainable (``requires_grad``; for the
masked methods -- TR-PTS, GPS -- every candidate, the real count is logged
after the Fisher pass), head and total.  The model is built, not
initialised: nothing is loaded.

Example:
    python tools/analysis_tools/get_flops.py \\
        configs/sparse-tuning/vit-b_vtab1k-cifar100.py
    python tools/analysis_tools/get_flops.py CONFIG --shape 384 \\
        --cfg-options model.backbone.keep_layers="(3,6,9)"
"""
import argparse
from typing import List, Optional

import mmtrpts  # noqa: F401  (stack fixes; registers the components)
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS

from mmtrpts.complexity import count_flops, count_parameters


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config file')
    parser.add_argument(
        '--shape',
        type=int,
        nargs='+',
        help='input size H [W] (default: the backbone '
        "img_size, else 224)")
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings in the config')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    if args.shape:
        height, width = (args.shape * 2)[:2]
    else:
        height = width = cfg.model.backbone.get('img_size', 224)
    model = MODELS.build(cfg.model).eval()
    params = count_parameters(model)
    backbone = count_flops(model, (3, height, width), backbone_only=True)
    whole = count_flops(model, (3, height, width))
    print(f'config: {args.config}')
    print(f'input: 3 x {height} x {width}')
    print(f'backbone FLOPs: {backbone / 1e9:.4f} G (attention included)')
    print(f'model FLOPs: {whole / 1e9:.4f} G')
    share = 100 * params['trainable'] / params['total']
    print(f'parameters: total {params["total"]:,}, trainable '
          f'{params["trainable"]:,} ({share:.2f}%), head '
          f'{params["head"]:,}, trainable without the head '
          f'{params["trainable"] - params["head"]:,}')


if __name__ == '__main__':
    main()
