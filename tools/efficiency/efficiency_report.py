"""Efficiency table of the implemented methods vs full fine-tuning.

Every method of ``mmtrpts.efficiency.methods.METHODS`` (full fine-tuning,
linear probing, the frozen-weights bound, mmpretrain's LoRA, TR-PTS on the
masked path, TR-PTS sparse-value, TR-PTS sparse-value + tokens, the GPS
rule, SPT-LoRA, RLRR, Sparse-Tuning) is measured on this machine in this
one run: trainable parameters, gradient elements communicated per step
(what DDP all-reduces), optimizer state elements, backbone GFLOPs per image
(attention counted), inference images/s, training step time and peak
training memory, each also as a ratio to full fine-tuning and to the
frozen-weights bound; then the cost of the TR-PTS Fisher pass against the
TR-PTS training steps, and the issue's targets as checks.  Inference
forwards and training steps are timed one by one, interleaved across
methods; peak training memory is measured in one fresh process per method,
the Fisher pass in its own.  Ratios are printed, never asserted.  Weights
and images are random: this measures cost, not accuracy.

Example:
    python tools/efficiency/efficiency_report.py --arch b --img-size 224 \\
        --batch 8 --steps 3 --runs 20 --out results.json
    # a tiny ViT, in under two minutes on 2 CPU cores
    python tools/efficiency/efficiency_report.py --embed-dims 64 \\
        --depth 6 --heads 4 --img-size 32 --patch 4 --batch 4 --steps 2 \\
        --runs 4 --keep-layers 1,3,5 --target-ratio 0.05
"""
import argparse
import json
import shlex
import sys
import time
from typing import List, Optional

from mmtrpts.efficiency.common import add_vit_args, vit_arch
from mmtrpts.efficiency.report import (ReportSettings, efficiency_report,
                                       format_report)
from mmtrpts.efficiency.token_selection import load_average


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_vit_args(parser, num_classes=100)
    parser.add_argument(
        '--batch',
        type=int,
        default=8,
        help='images per forward and per training step '
        '(default: 8)')
    parser.add_argument(
        '--steps',
        type=int,
        default=3,
        help='timed training steps per method after 1 '
        'warm-up step (default: 3)')
    parser.add_argument(
        '--runs',
        type=int,
        default=20,
        help='forwards per inference network; the first '
        '25%% are warm-up (default: 20)')
    parser.add_argument(
        '--device',
        default='auto',
        help="'auto' (cuda if available), 'cpu', 'cuda'")
    parser.add_argument(
        '--target-ratio',
        type=float,
        default=0.0034,
        help='TR-PTS budget: trainable / backbone params')
    parser.add_argument(
        '--fisher-batches',
        type=int,
        default=4,
        help='batches of the Fisher pass; the first is warm-up for its '
        'time per sample (default: 4)')
    parser.add_argument(
        '--keep-rate',
        type=float,
        default=0.7,
        help='token keep rate of TR-PTS (default: 0.7)')
    parser.add_argument(
        '--keep-layers',
        default='3,6,9',
        help='0-based keep/fuse blocks of TR-PTS and Sparse-Tuning, fixed '
        '(default: 3,6,9)')
    parser.add_argument(
        '--gps-k',
        type=int,
        default=1,
        help='GPS: entries per output neuron (default: 1)')
    parser.add_argument(
        '--lora-rank',
        type=int,
        default=8,
        help="rank of mmpretrain's LoRA on qkv (default: 8)")
    parser.add_argument(
        '--spt-rank', type=int, default=8, help='SPT-LoRA rank (default: 8)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--amp',
        action='store_true',
        help='fp16 autocast and AmpOptimWrapper (CUDA)')
    parser.add_argument('--out', help='write all measurements as JSON')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    settings = ReportSettings(
        arch=vit_arch(args.arch, args.embed_dims, args.depth, args.heads),
        img_size=args.img_size,
        patch_size=args.patch,
        num_classes=args.num_classes,
        batch=args.batch,
        steps=args.steps,
        runs=args.runs,
        device=args.device,
        amp=args.amp,
        target_ratio=args.target_ratio,
        fisher_batches=args.fisher_batches,
        keep_rate=args.keep_rate,
        keep_layers=tuple(int(i) for i in args.keep_layers.split(',') if i),
        seed=args.seed,
        gps_k=args.gps_k,
        lora_rank=args.lora_rank,
        spt_rank=args.spt_rank)
    load_before = load_average()
    start = time.perf_counter()
    report = efficiency_report(
        settings, log=lambda m: print(m, file=sys.stderr, flush=True))
    report.update(
        command=shlex.join(sys.orig_argv),
        wall_seconds=time.perf_counter() - start,
        load_average_before=load_before,
        load_average_after=load_average())
    print(format_report(report))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(report, f, indent=2)
        print(f'written to {args.out}')


if __name__ == '__main__':
    main()
