"""Convert a Google ViT ``.npz`` or timm ViT checkpoint to MMPretrain.

Example::

    python tools/model_converters/vit_to_mmpretrain.py \\
        ViT-B_16.npz checkpoints/vit-b16_in21k_mmpretrain.pth

The output holds ``backbone.*`` (and, with ``--keep-head``, ``head.*``)
weights; use it with ``load_from`` or with ``backbone.init_cfg=dict(
type='Pretrained', checkpoint=DST, prefix='backbone.')``.
"""
import argparse

from mmtrpts.checkpoints.vit_conversion import convert_file


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert a Google ViT .npz or a timm ViT state dict '
        '(.pth/.pt/.bin) to an MMPretrain VisionTransformer checkpoint.')
    parser.add_argument('src', help='source .npz or torch checkpoint')
    parser.add_argument('dst', help='output MMPretrain checkpoint path')
    parser.add_argument(
        '--keep-head',
        action='store_true',
        help='also convert the classification head (and pre_logits) to '
        'head.layers.* of VisionTransformerClsHead')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    summary = convert_file(args.src, args.dst, keep_head=args.keep_head)
    width = max(len(key) for key in summary)
    for key, value in summary.items():
        print(f'{key:<{width}} : {value}')


if __name__ == '__main__':
    main()
