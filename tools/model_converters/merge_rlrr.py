"""Fold a trained RLRR checkpoint into a plain ViT checkpoint.

Example::

    python tools/model_converters/merge_rlrr.py \\
        work_dirs/vit-b_cub/epoch_60.pth vit-b_cub_rlrr-merged.pth

Every RLRR Linear and SSF of the ``RLRRViT`` backbone is folded into the
frozen weights (RLRR.md §3); the head and everything else are copied.  The
output ``{'meta': ..., 'state_dict': ...}`` has the keys of the same model
with MMPretrain's ``VisionTransformer`` (``backbone.*`` loads with
``strict=True``): in the training config set the backbone's
``type='VisionTransformer'``, drop ``rlrr_init`` and ``branch_dropout``, and
use the file with ``load_from`` or ``tools/test.py``.  The merged model has
the plain ViT's parameters and FLOPs.
"""
import argparse

import torch

import mmtrpts  # noqa: F401  (stack fixes first)
from mmtrpts.compat.checkpoint_loader import read_checkpoint_file
from mmtrpts.converters.rlrr_merge import merge_rlrr_state_dict


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Fold the RLRR and SSF parameters of a training '
        'checkpoint into a plain VisionTransformer checkpoint.')
    parser.add_argument('checkpoint', help='RLRR training checkpoint')
    parser.add_argument('out', help='output checkpoint path')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    checkpoint = read_checkpoint_file(args.checkpoint, map_location='cpu')
    state = checkpoint.get('state_dict', checkpoint)
    merged = merge_rlrr_state_dict(state)
    if len(merged) == len(state):
        raise SystemExit(f'{args.checkpoint} holds no RLRR parameters')
    meta = dict(merged_from=dict(method='RLRR', checkpoint=args.checkpoint))
    dataset_meta = checkpoint.get('meta', {}).get('dataset_meta')
    if dataset_meta is not None:
        meta['dataset_meta'] = dataset_meta
    torch.save(dict(meta=meta, state_dict=merged), args.out)
    print(f'wrote {args.out}: {len(state) - len(merged)} RLRR/SSF tensors '
          f'folded, {len(merged)} tensors left')


if __name__ == '__main__':
    main()
