"""Merge an SPT-LoRA checkpoint into a plain ViT checkpoint.

The LoRA branches are folded into their weights (``W[rows] += B @ A``, no
scaling); unstructured entries and full vectors were trained in place.  The
output loads strictly into MMPretrain's ``VisionTransformer`` (configs with
``type='VisionTransformer'``), without mmtrpts and without the allocation
file, at zero inference overhead.  SPT-Adapter checkpoints are refused
(not mergeable).

Example::

    python tools/model_converters/merge_spt.py \\
        work_dirs/vit-b-lora_vtab1k-cifar100/epoch_100.pth merged.pth
"""
import argparse

import torch

import mmtrpts  # noqa: F401  (stack fixes first)
from mmtrpts.compat.checkpoint_loader import read_checkpoint_file
from mmtrpts.models.peft import merge_spt_lora


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Fold SPT-LoRA into the weights of a trained SPTViT '
        'checkpoint and write a plain state-dict-only checkpoint.')
    parser.add_argument('checkpoint', help='SPT-LoRA training checkpoint')
    parser.add_argument('out', help='output checkpoint path')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    checkpoint = read_checkpoint_file(args.checkpoint, map_location='cpu')
    state_dict = checkpoint.get('state_dict', checkpoint)
    try:
        merged = merge_spt_lora(state_dict)
    except ValueError as error:
        raise SystemExit(f'{args.checkpoint}: {error}')
    branches = sum(k.endswith('.down') for k in state_dict if k not in merged)
    meta = dict(merged_from=dict(method='SPT-LoRA', checkpoint=args.checkpoint,
                                 lora_branches=branches))
    # class names for MMPretrain's inferencers
    dataset_meta = checkpoint.get('meta', {}).get('dataset_meta')
    if dataset_meta is not None:
        meta['dataset_meta'] = dataset_meta
    torch.save(dict(meta=meta, state_dict=merged), args.out)
    print(f'wrote {args.out}: {len(merged)} tensors, {branches} LoRA '
          'branches folded into their weights')


if __name__ == '__main__':
    main()
