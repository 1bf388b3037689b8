"""Export a training checkpoint as a sparse delta against its base.

Example::

    python tools/model_converters/export_delta.py \\
        work_dirs/run/epoch_100.pth run_delta.pth \\
        --base checkpoints/vit-b16_in21k_mmpretrain.pth

The delta holds only the selected entries and the densely trained tensors
(biases, head, ...).  A run without a selection record (SPT, RLRR,
Sparse-Tuning, full fine-tuning) is exported as the entries that differ
from ``--base`` (then required).  It loads like a dense checkpoint (``load_from``,
``init_cfg=dict(type='Pretrained', ...)``, ``get_model(pretrained=...)``)
once ``mmtrpts`` is imported, reading the base named in its meta; or merge
it with ``tools/model_converters/merge.py delta``.
"""
import argparse
import os.path as osp

import mmtrpts  # noqa: F401  (stack fixes first)
import torch

from mmtrpts.checkpoints import delta_size_report, is_delta
from mmtrpts.checkpoints.export import export_checkpoint
from mmtrpts.checkpoints.io import load_checkpoint_file


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Write the weights a masked training run changed as a '
        'delta against its pretrained base checkpoint.')
    parser.add_argument('checkpoint', help='training checkpoint (epoch_N)')
    parser.add_argument('out', help='output delta checkpoint path')
    parser.add_argument(
        '--base',
        help='pretrained base checkpoint: verify that nothing outside the '
        'selection changed, and record its path in the delta')
    parser.add_argument(
        '--weights',
        choices=('state_dict', 'raw'),
        default='state_dict',
        help="'state_dict' (default): checkpoint['state_dict'], the EMA "
        "weights when the run used EMAHook; 'raw': the trained weights "
        "(checkpoint['ema_state_dict'] when EMAHook swapped them)")
    parser.add_argument(
        '--base-path-in-meta',
        help='base path to record in the delta instead of --base (e.g. a '
        'path relative to where the delta will be used)')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    # A runner checkpoint: read with MMEngine's own types allow-listed,
    # never executing code from the file.
    checkpoint = load_checkpoint_file(args.checkpoint, map_location='cpu')
    if not isinstance(checkpoint, dict) or 'state_dict' not in checkpoint:
        raise SystemExit(f"{args.checkpoint}: not a training checkpoint (no "
                         "'state_dict')")
    if 'selection' not in checkpoint and not args.base:
        raise SystemExit(
            f'{args.checkpoint}: no selection record (FisherSelectionHook '
            'writes one); without it the changed entries are read against '
            'the pretrained base: give --base')
    base_state = None
    if args.base:
        base = load_checkpoint_file(args.base, map_location='cpu')
        if is_delta(base):
            raise SystemExit(f'{args.base} is itself a delta; merge it first '
                             'with tools/model_converters/merge.py delta')
        base_state = base.get('state_dict', base)
    delta, state_dict, message = export_checkpoint(
        checkpoint,
        args.checkpoint,
        base_state_dict=base_state,
        base_checkpoint=args.base_path_in_meta or args.base,
        weights=args.weights)
    print(message)
    if base_state is None:
        print('no --base: unchecked whether anything outside the selection '
              'changed, and the delta names no base checkpoint')
    torch.save(delta, args.out)
    report = delta_size_report(delta, state_dict)
    print(f"delta: {report['delta_bytes'] / 1e6:.3f} MB = "
          f"{100 * report['fraction']:.2f}% of the dense checkpoint "
          f"({report['dense_bytes'] / 1e6:.3f} MB)")
    print(f'wrote {args.out} ({osp.getsize(args.out)} bytes on disk)')


if __name__ == '__main__':
    main()
