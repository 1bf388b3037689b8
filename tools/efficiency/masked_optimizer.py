"""Benchmark masked TR-PTS fine-tuning against dense full fine-tuning.

Each mode (``full``: plain ViT, every parameter in AdamW; ``trpts``: real
Fisher pass, TR-PTS selection at ``--target-ratio``, armed masked AdamW)
runs in a fresh subprocess of this script (``--worker MODE``, which prints
its measurements as JSON on the last line of stdout).  The parent prints
one table with absolute values and TR-PTS / full ratios measured in the
same run, and writes everything to ``--out``.  Weights and images are
random: this measures cost, not accuracy.

Example:
    python tools/efficiency/masked_optimizer.py --arch b --batch 8 \\
        --steps 3 --out results.json
    # a tiny ViT, in seconds
    python tools/efficiency/masked_optimizer.py --embed-dims 32 --depth 2 \\
        --heads 2 --img-size 32 --patch 4 --batch 4 --steps 2 \\
        --target-ratio 0.2
"""
import argparse
import json
import shlex
import subprocess
import sys
import time
from typing import List, Optional

import torch

from mmtrpts.efficiency.common import (add_vit_args, describe_device,
                                       resolve_device, vit_arch)
from mmtrpts.efficiency.masked_optimizer import MODES, format_table, run_mode


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_vit_args(parser, num_classes=100)
    parser.add_argument(
        '--batch',
        type=int,
        default=8,
        help='images per training and Fisher batch')
    parser.add_argument(
        '--steps',
        type=int,
        default=3,
        help='timed training steps after 1 warm-up step')
    parser.add_argument(
        '--target-ratio',
        type=float,
        default=0.0034,
        help='TR-PTS budget: trainable / backbone params')
    parser.add_argument('--fisher-batches', type=int, default=2)
    parser.add_argument(
        '--device',
        default='auto',
        help="'auto' (cuda if available), 'cpu', 'cuda'")
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', help='write all measurements as JSON')
    parser.add_argument('--worker', choices=MODES, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def worker(args: argparse.Namespace) -> None:
    """Measure one mode; the JSON result is the last line of stdout."""
    result = run_mode(
        args.worker,
        vit_arch(args.arch, args.embed_dims, args.depth, args.heads),
        batch=args.batch,
        steps=args.steps,
        target_ratio=args.target_ratio,
        fisher_batches=args.fisher_batches,
        device=args.device,
        img_size=args.img_size,
        patch_size=args.patch,
        num_classes=args.num_classes,
        seed=args.seed)
    sys.stdout.flush()
    print('\n' + json.dumps(result), flush=True)


def spawn(mode: str, argv: List[str]) -> dict:
    """Run ``mode`` in a fresh interpreter and parse its JSON result."""
    cmd = [sys.executable, __file__, *argv, '--worker', mode]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        sys.stderr.write(f'worker {mode!r} failed (exit {proc.returncode})'
                         f'\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr'
                         f'\n{proc.stderr[-8000:]}\n')
        raise SystemExit(1)
    result = json.loads(lines[-1])
    result['process_seconds'] = time.perf_counter() - start
    return result


def _model_line(full: dict) -> str:
    arch = full['arch']
    name = (f'ViT-{arch}' if isinstance(arch, str) else
            'ViT(embed_dims={embed_dims}, depth={num_layers}, '
            'heads={num_heads})'.format(**arch))
    return (f'model: {name}/{full["patch_size"]}, {full["img_size"]} px, '
            f'{full["num_classes"]} classes, {full["total_params"]:,} '
            f'params ({full["backbone_params"]:,} backbone); AdamW '
            f'lr 1e-3 wd 0.05; batch {full["batch"]}; 1 warm-up + '
            f'{full["steps"]} timed steps; one fresh process per mode')


def report(full: dict, trpts: dict, command: str, wall: float) -> str:
    """The printed report: set-up lines, the table and notes."""
    import mmengine
    import mmpretrain
    fixed = trpts['trainable_params'] - trpts['selected_entries']
    fisher_full = (
        trpts['fisher_seconds_per_sample'] / full['step_seconds_per_sample'])
    budget = (f'TR-PTS: target {100 * trpts["target_ratio"]:.3f}% of the '
              f'backbone -> realised {100 * trpts["realized_ratio"]:.3f}% '
              f'({trpts["selected_entries"]:,} selected entries in the '
              f'masked matrices + {fixed:,} in biases and head; '
              f'calibration '
              f'{trpts["calibration"]}, M={trpts["m_percent"]:.4g}%, '
              f'C_min={trpts["c_min"]:.4g}); Fisher pass over '
              f'{trpts["fisher_samples"]} random images in '
              f'{trpts["fisher_batches"]} batches')
    if full['memory_kind'].startswith('cuda'):
        memory = ('memory: torch.cuda.max_memory_allocated during the '
                  'training steps (peak reset after set-up); baseline = '
                  'allocated before the model was built')
    else:
        memory = ('memory: process peak RSS (getrusage ru_maxrss) during '
                  'the training steps; baseline = ru_maxrss after importing '
                  'torch/mmpretrain/mmtrpts, before the model was built')
    if full['peak_reset'] and trpts['peak_reset']:
        memory += (f'; the high-water mark is reset after set-up, so the '
                   f'Fisher pass (set-up peak '
                   f'{trpts["setup_peak_bytes"] / 2**20:.1f} MiB) is not '
                   'in the TR-PTS peak')
    else:
        memory += ('; the high-water mark could NOT be reset: peaks include '
                   'model building and the Fisher pass')
    notes = [
        f'optimizer state = bytes of all tensors in optimizer.state after '
        f'the first step (full: {full["optimizer_state_entries"]} tensors, '
        f'TR-PTS: {trpts["optimizer_state_entries"]} leaves/tensors; incl. '
        f'4-byte step counters)', memory,
        f'step time = median of model.train_step (forward, backward, '
        f'optimizer step) / batch; Fisher time = median per batch after '
        f'the first (preprocess, forward, autograd.grad, squaring) / batch;'
        f' Fisher / full step = {fisher_full:.3f}; optimizer update = '
        f'median of optim_wrapper.step per step (TR-PTS: incl. gather and '
        f'scatter of the selected entries)',
        f'wall time {wall:.1f} s (full: {full["process_seconds"]:.1f} s, '
        f'TR-PTS incl. Fisher pass and selection: '
        f'{trpts["process_seconds"]:.1f} s)'
    ]
    if not full['memory_kind'].startswith('cuda'):
        notes.insert(
            -1,
            (f'process CPU time / wall time of the timed steps: full '
             f'{full["step_cpu_utilisation"]:.2f}, TR-PTS '
             f'{trpts["step_cpu_utilisation"]:.2f} ({full["threads"]} torch '
             'threads; a low value means the host took the CPU away and '
             'the wall times are inflated)'))
    lines = [
        'Masked TR-PTS fine-tuning vs dense full fine-tuning',
        f'command: {command}', f'device: {full["device_name"]}',
        f'torch {torch.__version__}, mmpretrain {mmpretrain.__version__}, '
        f'mmengine {mmengine.__version__}',
        _model_line(full), budget, '',
        format_table(full, trpts), ''
    ] + [f'* {n}' for n in notes]
    return '\n'.join(lines)


def main() -> None:
    argv = sys.argv[1:]
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return
    vit_arch(args.arch, args.embed_dims, args.depth, args.heads)  # check
    command = shlex.join(sys.orig_argv)
    device = resolve_device(args.device)
    print(
        f'Running {", ".join(MODES)} on {describe_device(device)} ...',
        flush=True)
    start = time.perf_counter()
    results = {mode: spawn(mode, argv) for mode in MODES}
    wall = time.perf_counter() - start
    print(report(results['full'], results['trpts'], command, wall))
    if args.out:
        from mmtrpts.efficiency.masked_optimizer import compare
        with open(args.out, 'w') as f:
            json.dump(
                dict(
                    command=command,
                    wall_seconds=wall,
                    device=results['full']['device_name'],
                    torch=torch.__version__,
                    ratios=compare(results['full'], results['trpts']),
                    **results),
                f,
                indent=2)
        print(f'written to {args.out}')


if __name__ == '__main__':
    main()
