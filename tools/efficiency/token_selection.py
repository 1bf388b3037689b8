"""Benchmark [CLS]-attention token keep/fuse against a dense ViT.

Five settings, built with the same random weights and measured in this one
process: mmpretrain's dense ``VisionTransformer``; ``TokenKeepFuseViT``
without selection; rho = 0.7 at ``--keep-layers`` with ceil rounding and
EViT fusion (Sparse-Tuning / EViT); rho = 0.7 with floor rounding; rho =
0.95 with floor rounding.  Per setting: backbone GFLOPs per image
(attention matmuls included) and inference images/s of the whole
classifier (ToMe's protocol: eval, no_grad, fixed batch, first 25% of
``--runs`` discarded), timed forward by forward with the settings
interleaved (every iteration runs each setting once, order rotated); the
speed-up is the median over iterations of the dense forward time over
this setting's forward time in the same iteration.  The issue's targets
are printed next to the numbers, never asserted.

Example:
    python tools/efficiency/token_selection.py --arch b --img-size 224 \\
        --batch 8 --runs 40 --out results.json
    # a tiny ViT, in seconds
    python tools/efficiency/token_selection.py --embed-dims 64 --depth 6 \\
        --heads 4 --img-size 32 --patch 4 --batch 4 --runs 8 \\
        --keep-layers 1,3,5
"""
import argparse
import json
import shlex
import sys
import time
from typing import List, Optional

import torch

from mmtrpts.efficiency.common import add_vit_args, vit_arch
from mmtrpts.efficiency.token_selection import (compare, default_settings,
                                                format_table, load_average,
                                                unsupported_note)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_vit_args(parser, num_classes=1000)
    parser.add_argument(
        '--batch', type=int, default=8, help='images per forward (default: 8)')
    parser.add_argument(
        '--runs',
        type=int,
        default=40,
        help='forwards per setting, interleaved; the '
        'first 25%% are warm-up (default: 40)')
    parser.add_argument('--warmup-fraction', type=float, default=0.25)
    parser.add_argument(
        '--keep-layers',
        default='3,6,9',
        help='0-based selection blocks (default: 3,6,9)')
    parser.add_argument(
        '--device',
        default='auto',
        help="'auto' (cuda if available), 'cpu', 'cuda'")
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', help='write all measurements as JSON')
    return parser.parse_args(argv)


def _model_line(results: dict, keep_layers: List[int]) -> str:
    arch = results['arch']
    name = (f'ViT-{arch}' if isinstance(arch, str) else
            'ViT(embed_dims={embed_dims}, depth={num_layers}, '
            'heads={num_heads})'.format(**arch))
    timed = results['settings']['dense']['timed_runs']
    return (f'model: {name}/{results["patch_size"]}, '
            f'{results["img_size"]} px, {results["num_classes"]} classes, '
            f'random weights shared by all settings; selection blocks '
            f'{keep_layers}; batch {results["batch"]}; {results["runs"]} '
            f'forwards per setting ({results["runs"] - timed} warm-up, '
            f'{timed} timed), interleaved')


def report(results: dict, command: str, wall: float, load_before, load_after,
           keep_layers: List[int]) -> str:
    """The printed report: set-up lines, the table and notes."""
    import mmengine
    import mmpretrain
    settings = results['settings']
    cpu = [res['cpu_utilisation'] for res in settings.values()]
    notes = [
        'timed: the whole classifier, model(x, mode="tensor") (backbone + '
        'head), eval + torch.no_grad(), one fixed batch, each forward '
        'timed on its own (CUDA synchronised around it); iteration i runs '
        'every setting once, in rotated order; images/s = '
        'batch / median forward time [slowest-fastest forward]; speed-up '
        '= median [interquartile range] over iterations of dense forward '
        'time / this forward time, same iteration',
        unsupported_note(results),
        'no selection vs dense: max |output difference| = '
        f'{settings["no_selection"]["max_abs_diff_vs_dense"]:.3g}; '
        'targets (issue): no selection speed-up >= 0.97 (overhead <= 3%); '
        'rho=0.7 ceil: GFLOPs / dense about 0.66 and speed-up >= 1.35 -- '
        'printed, not asserted',
        f'load average (1/5/15 min) before {load_before}, after '
        f'{load_after}; process CPU time / wall time of the timed forwards '
        f'{min(cpu):.2f}-{max(cpu):.2f} ({results["threads"]} torch '
        'threads; well below the thread count means the host took CPU '
        'away)',
        f'wall time {wall:.1f} s',
    ]
    lines = [
        'Token keep/fuse vs dense ViT: FLOPs and inference throughput',
        f'command: {command}', f'device: {results["device_name"]}',
        f'torch {torch.__version__}, mmpretrain {mmpretrain.__version__}, '
        f'mmengine {mmengine.__version__}',
        _model_line(results, keep_layers), '',
        format_table(results), ''
    ] + [f'* {n}' for n in notes]
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    arch = vit_arch(args.arch, args.embed_dims, args.depth, args.heads)
    keep_layers = [int(i) for i in args.keep_layers.split(',') if i]
    command = shlex.join(sys.orig_argv)
    load_before = load_average()
    start = time.perf_counter()
    results = compare(
        default_settings(keep_layers),
        arch=arch,
        img_size=args.img_size,
        patch_size=args.patch,
        batch=args.batch,
        runs=args.runs,
        warmup_fraction=args.warmup_fraction,
        device=args.device,
        num_classes=args.num_classes,
        seed=args.seed,
        log=lambda m: print(m, file=sys.stderr, flush=True))
    wall = time.perf_counter() - start
    load_after = load_average()
    print(report(results, command, wall, load_before, load_after, keep_layers))
    if args.out:
        results.update(
            command=command,
            wall_seconds=wall,
            load_average_before=load_before,
            load_average_after=load_after,
            keep_layers=keep_layers)
        with open(args.out, 'w') as f:
            json.dump(results, f, indent=2)
        print(f'written to {args.out}')


if __name__ == '__main__':
    main()
