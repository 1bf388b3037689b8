"""Fold a run's trained parameters into a plain ViT checkpoint.

One command for every method whose result merges into an ordinary
MMPretrain ``VisionTransformer`` checkpoint (zero inference overhead)::

    # TR-PTS / GPS: a delta (export_delta.py) applied to its base
    python tools/model_converters/merge.py delta run_delta.pth dense.pth \\
        --base checkpoints/vit-b16_in21k_mmpretrain.pth
    # RLRR: rescaling and SSF folded into the weights
    python tools/model_converters/merge.py rlrr \\
        work_dirs/vit-b_cub/epoch_60.pth vit-b_cub_rlrr-merged.pth
    # SPT-LoRA: LoRA branches folded into their weights (Adapter: refused)
    python tools/model_converters/merge.py spt \\
        work_dirs/vit-b-lora_vtab1k-cifar100/epoch_100.pth merged.pth

The output ``{'meta': ..., 'state_dict': ...}`` has the keys of the same
model built with ``type='VisionTransformer'`` (drop the method's backbone
arguments from the config) and works with ``load_from``,
``init_cfg=dict(type='Pretrained', ...)`` and ``tools/test.py`` without
mmtrpts.  ``meta.dataset_meta`` (class names) is kept.
"""
import argparse

import mmtrpts  # noqa: F401  (stack fixes first)
import torch

from mmtrpts.checkpoints.merge import METHODS, merge_checkpoint
from mmtrpts.checkpoints.io import load_checkpoint_file


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Fold trained parameters (a delta, RLRR, SPT-LoRA) into '
        'a plain VisionTransformer checkpoint.')
    parser.add_argument('method', choices=sorted(METHODS))
    parser.add_argument(
        'checkpoint', help='trained checkpoint (for delta: the delta)')
    parser.add_argument('out', help='output checkpoint path')
    parser.add_argument('--base', help='pretrained base checkpoint (delta)')
    parser.add_argument(
        '--force', action='store_true',
        help='delta: apply it even if the base differs in content from the '
        'one it was made on')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.method == 'delta':
        checkpoint = torch.load(
            args.checkpoint, map_location='cpu', weights_only=True)
        if args.base is None:
            raise SystemExit('merging a delta needs --base BASE_CHECKPOINT')
        base = load_checkpoint_file(args.base, map_location='cpu')
    else:
        checkpoint = load_checkpoint_file(args.checkpoint, map_location='cpu')
        base = None
    try:
        merged = merge_checkpoint(
            args.method,
            checkpoint,
            args.checkpoint,
            base=base,
            base_source=args.base,
            force=args.force)
    except ValueError as error:
        raise SystemExit(str(error))
    torch.save(merged, args.out)
    info = merged['meta']['merged_from']
    if args.method == 'delta':
        meta = checkpoint['meta']
        detail = (f"{meta['num_sparse_entries']} sparse and "
                  f"{meta['num_dense_entries']} dense entries from the delta")
    else:
        detail = f"{info['folded_tensors']} {info['method']} tensors folded"
    print(f"wrote {args.out}: {len(merged['state_dict'])} tensors; "
          f'{detail}')


if __name__ == '__main__':
    main()
