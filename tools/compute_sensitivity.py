"""SPT stage 1: sensitivity pass and allocation file of an SPT config.

Builds the config's model with a plain ViT backbone and its pretrained
weights, scores SPT's tensors over the training split (16 x 32 images by
default) and writes the allocation ``SPTViT(sensitivity_file=...)`` reads
when the model is built (see ``mmtrpts.apis.sensitivity``).

Example:
    python tools/compute_sensitivity.py \\
        configs/spt/vit-b-lora_vtab1k-cifar100.py --budget 0.4 \\
        --out data/sensitivity/spt-lora_cifar100_0.4M.pth
    tools/dist_train.sh configs/spt/vit-b-lora_vtab1k-cifar100.py 8
"""
import argparse

import mmtrpts  # noqa: F401  (stack fixes first; registers components)
from mmengine.config import Config, DictAction

from mmtrpts.apis import compute_sensitivity


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='a config with an SPTViT backbone')
    parser.add_argument('--budget', type=float, help='target in millions of '
                        'parameters, head excluded (default: '
                        'sensitivity_cfg.budget of the config)')
    parser.add_argument('--type', dest='structured_type',
                        choices=('lora', 'adapter'), help='structured module '
                        '(default: the backbone\'s structured_type)')
    parser.add_argument('--out', help='allocation file (default: the '
                        'backbone\'s sensitivity_file)')
    parser.add_argument('--mode', choices=('eval', 'train'),
                        help="model mode of the pass (default 'eval'; SPT "
                        "used 'train')")
    parser.add_argument('--split', help='training split to score (e.g. '
                        'train800)')
    parser.add_argument('--structured-only', action='store_true',
                        default=None, help='drop the unstructured entries')
    parser.add_argument('--device', help='default: cuda when available')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings in the config')
    return parser.parse_args()


def main():
    args = parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    compute_sensitivity(
        cfg, out=args.out, device=args.device, budget=args.budget,
        structured_type=args.structured_type, mode=args.mode,
        split=args.split, structured_only=args.structured_only)


if __name__ == '__main__':
    main()
