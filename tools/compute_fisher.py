"""Run only the Fisher pass of a config and write the selection.

Writes ``selection.pth`` (the record FisherSelectionHook can load through
``selection_file=``), ``selection.json`` (per matrix: connections per
neuron, selected count, density) and ``selection_density.png``.

Example:
    python tools/compute_fisher.py configs/embedded/vit-tiny_trpts-param_mini-vtab.py \\
        --out work_dirs/fisher
    # then train without a second pass:
    python tools/train.py CONFIG --cfg-options \\
        custom_hooks.0.selection_file=work_dirs/fisher/selection.pth
"""
import argparse
import os.path as osp

import mmtrpts  # noqa: F401  (stack fixes first; registers components)
import torch
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from mmpretrain.registry import HOOKS, MODELS

from mmtrpts.analysis.selection_report import format_layer_table, \
    write_summary
from mmtrpts.selection.eligibility import assign_roles
from mmtrpts.selection.record import validate_record


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
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    hook_cfgs = [
        h for h in cfg.get('custom_hooks', [])
        if h.get('type') == 'FisherSelectionHook'
    ]
    if len(hook_cfgs) != 1:
        raise KeyError(f'{args.config} must have exactly one '
                       "dict(type='FisherSelectionHook') in custom_hooks")
    hook = HOOKS.build(hook_cfgs[0])
    out = args.out or osp.join('work_dirs',
                               osp.splitext(osp.basename(args.config))[0],
                               'selection')

    model = MODELS.build(cfg.model)
    model.init_weights()  # loads the pretrained backbone
    model.to(args.device)
    roles = assign_roles(model, cfg.optim_wrapper.get('eligibility'))
    record = hook.select(cfg, model, roles)
    validate_record(record, {n: p.shape for n, p in model.named_parameters()})
    paths = write_summary(record, out)
    torch.save(record, osp.join(out, 'selection.pth'))
    print(format_layer_table(record))
    budget = record['budget']
    print(f'trainable {budget["trainable"]:,} = '
          f'{100 * budget["realized_ratio"]:.3f}% of the '
          f'{budget["denominator_kind"]}; written to {out}: selection.pth, ' +
          ', '.join(osp.basename(p) for p in paths.values()))


if __name__ == '__main__':
    main()
