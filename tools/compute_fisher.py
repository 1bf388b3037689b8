"""Run only the Fisher pass of a config and write the selection.

Writes ``selection.pth`` (the record FisherSelectionHook can load through
``selection_file=``), ``selection.json`` (per matrix: connections per
neuron, selected count, density) and ``selection_density.png``.

Example:
    python tools/compute_fisher.py
        configs/embedded/vit-tiny_trpts-param_mini-vtab.py \\ --out
        work_dirs/fisher
    # then train without a second pass:
    python tools/train.py CONFIG --cfg-options \\
        custom_hooks.0.selection_file=work_dirs/fisher/selection.pth
"""
import argparse
import os.path as osp

import mmtrpts  # noqa: F401  (stack fixes first; registers components)
import torch
from mmengine.config import Config, DictAction

from mmtrpts.apis import compute_selection
from mmtrpts.selection.report import format_layer_table


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='a config with FisherSelectionHook')
    parser.add_argument(
        '--out',
        help='output folder (default: '
        'work_dirs/<config name>/selection)')
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings in the config')
    return parser.parse_args()


def main():
    args = parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    result = compute_selection(cfg, args.out, device=args.device)
    record, paths = result['record'], result['paths']
    print(format_layer_table(record))
    budget = record['budget']
    out = osp.dirname(paths['pth'])
    print(f'trainable {budget["trainable"]:,} = '
          f'{100 * budget["realized_ratio"]:.3f}% of the '
          f'{budget["denominator_kind"]}; written to {out}: ' +
          ', '.join(osp.basename(p) for p in paths.values()))


if __name__ == '__main__':
    main()
