"""Train a model from a config (MMPretrain-compatible command line).

Examples:
    python tools/train.py configs/embedded/vit-tiny_full-ft_mini-vtab.py
    python tools/train.py CONFIG --resume            # latest checkpoint
    tools/dist_train.sh CONFIG 8 --auto-scale-lr     # 8 GPUs (or CPU ranks)
"""
import argparse
import os

import mmtrpts  # noqa: F401  (stack fixes first; registers components)
from mmengine.config import Config, DictAction
from mmengine.runner import Runner

from mmtrpts.apis import apply_loader_flags, apply_train_flags, \
    resolve_work_dir
from mmtrpts.checkpoints.io import trust_checkpoint
from mmtrpts.compat import setup_cpu_distributed, shutdown_distributed


def parse_args():
    parser = argparse.ArgumentParser(description='Train a classifier')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from the given checkpoint, or from the latest '
        'checkpoint in the work dir when no path is given')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision training (CUDA)')
    parser.add_argument('--no-validate', action='store_true',
                        help='skip validation during training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by total batch size / '
                        'auto_scale_lr.base_batch_size')
    parser.add_argument('--no-pin-memory', action='store_true',
                        help='set pin_memory=False in all dataloaders')
    parser.add_argument('--no-persistent-workers', action='store_true',
                        help='set persistent_workers=False in all '
                        'dataloaders')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings, e.g. model.head.num_classes=8')
    parser.add_argument(
        '--trust-checkpoint', action='append', default=[], metavar='FILE',
        help='fully unpickle this checkpoint file (only for a file you '
        'trust: it may run code); every other file loads without executing '
        'code')
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm', 'mpi'],
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main():
    args = parse_args()
    for path in args.trust_checkpoint:
        trust_checkpoint(path)
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    resolve_work_dir(cfg, args.config, args.work_dir)
    apply_train_flags(cfg, resume=args.resume, amp=args.amp,
                      no_validate=args.no_validate,
                      auto_scale_lr=args.auto_scale_lr)
    apply_loader_flags(cfg, args.no_pin_memory, args.no_persistent_workers)
    setup_cpu_distributed(cfg, args.launcher)
    runner = Runner.from_cfg(cfg)
    runner.train()
    shutdown_distributed()


if __name__ == '__main__':
    main()
