"""Export a masked (TR-PTS) training checkpoint as a sparse delta.

Example::

    python tools/model_converters/export_delta.py \\
        work_dirs/run/epoch_100.pth run_delta.pth \\
        --base checkpoints/vit-b16_in21k_mmpretrain.pth

The delta holds only the selected entries and the densely trained tensors
(biases, head, ...).  It loads like a dense checkpoint (``load_from``,
``init_cfg=dict(type='Pretrained', ...)``, ``get_model(pretrained=...)``)
once ``mmtrpts`` is imported, reading the base named in its meta; or merge
it with ``tools/model_converters/merge.py delta``.
"""
import argparse
import os.path as osp

import mmtrpts  # noqa: F401  (stack fixes first)
import torch

from mmtrpts.checkpoints import (check_plain, delta_size_report, is_delta,
                                 make_delta)
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


def choose_weights(checkpoint: dict, which: str):
    """Return ``(state_dict, label, key, message)`` for ``--weights``.

    ``label`` is ``'ema'`` or ``'raw'``; ``key`` the checkpoint entry read.
    """
    has_ema = 'ema_state_dict' in checkpoint
    if not has_ema:
        return (checkpoint['state_dict'], 'raw', 'state_dict',
                "exporting checkpoint['state_dict']: the trained weights "
                '(no EMA in this checkpoint)')
    if which == 'state_dict':
        return (checkpoint['state_dict'], 'ema', 'state_dict',
                "exporting checkpoint['state_dict']: the EMA weights "
                '(EMAHook swapped them in; --weights raw exports the '
                'trained ones)')
    # EMAHook stores the raw weights under the averaged model's 'module.'
    # prefix, next to its 'steps' buffer.
    ema = checkpoint['ema_state_dict']
    raw = {k[7:]: v for k, v in ema.items() if k.startswith('module.')}
    return (raw or dict(ema), 'raw', 'ema_state_dict',
            "exporting checkpoint['ema_state_dict']: the raw (non-EMA) "
            'trained weights')


def describe_source(path: str, checkpoint: dict, key: str) -> dict:
    """Plain-python provenance of the exported weights."""
    meta = checkpoint.get('meta') or {}
    source = dict(checkpoint=osp.abspath(path), weights_key=key)
    for name in ('epoch', 'iter'):
        if meta.get(name) is not None:
            source[name] = int(meta[name])
    for name in ('experiment_name', 'mmengine_version', 'time'):
        if isinstance(meta.get(name), str):
            source[name] = meta[name]
    return source


def main() -> None:
    args = parse_args()
    # A runner checkpoint: read with MMEngine's own types allow-listed,
    # never executing code from the file.
    checkpoint = load_checkpoint_file(args.checkpoint, map_location='cpu')
    if not isinstance(checkpoint, dict) or 'selection' not in checkpoint:
        raise SystemExit(
            f'{args.checkpoint}: not a TR-PTS/masked training checkpoint '
            "(no 'selection' record; it is written by FisherSelectionHook)")
    state_dict, label, key, message = choose_weights(checkpoint, args.weights)
    print(message)
    base_state = None
    if args.base:
        base = load_checkpoint_file(args.base, map_location='cpu')
        if is_delta(base):
            raise SystemExit(f'{args.base} is itself a delta; merge it first '
                             'with tools/model_converters/merge.py delta')
        base_state = base.get('state_dict', base)
    delta = make_delta(
        state_dict,
        checkpoint['selection'],
        base_state_dict=base_state,
        weights=label,
        source=describe_source(args.checkpoint, checkpoint, key),
        base_checkpoint=args.base_path_in_meta or args.base)
    dataset_meta = (checkpoint.get('meta') or {}).get('dataset_meta')
    try:
        check_plain(dataset_meta, 'dataset_meta')
        delta['meta']['dataset_meta'] = dataset_meta
    except TypeError as error:
        print(f'dataset_meta not kept: {error}')
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
