"""Merge a delta checkpoint into its base: a dense state-dict-only file.

Example::

    python tools/model_converters/merge_delta.py \\
        checkpoints/vit-b16_in21k_mmpretrain.pth run_delta.pth run_dense.pth

The output ``{'meta': ..., 'state_dict': ...}`` works with ``load_from``
and ``init_cfg=dict(type='Pretrained', ...)`` without ``mmtrpts``'s loader
and without the base file.
"""
import argparse

import torch

import mmtrpts  # noqa: F401  (stack fixes first)
from mmtrpts.checkpoints import apply_delta, is_delta, merged_meta
from mmtrpts.compat.checkpoint_loader import read_checkpoint_file


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Merge a delta checkpoint (export_delta.py) into its '
        'pretrained base and write a dense checkpoint.')
    parser.add_argument('base', help='pretrained base checkpoint')
    parser.add_argument('delta', help='delta checkpoint')
    parser.add_argument('out', help='output dense checkpoint path')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    delta = torch.load(args.delta, map_location='cpu', weights_only=True)
    if not is_delta(delta):
        raise SystemExit(f'{args.delta} is not a delta checkpoint')
    base = read_checkpoint_file(args.base, map_location='cpu')
    if is_delta(base):
        raise SystemExit(f'{args.base} is itself a delta; merge it first')
    base_state = base.get('state_dict', base)
    merged = apply_delta(base_state, delta)
    meta = merged_meta(delta['meta'], args.delta, args.base)
    torch.save(dict(meta=meta, state_dict=merged), args.out)
    print(f'wrote {args.out}: {len(merged)} tensors '
          f"({delta['meta']['num_sparse_entries']} sparse and "
          f"{delta['meta']['num_dense_entries']} dense entries from the "
          'delta)')


if __name__ == '__main__':
    main()
