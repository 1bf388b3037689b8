"""Measurement helpers shared by the efficiency benchmarks.

Model and data builders (a plain MMPretrain ViT classifier with random
weights, random MMPretrain-style batches), the optimizer wrappers of the
benchmarks, and the measurement primitives: peak memory (CPU RSS or the
CUDA allocator), device synchronisation and description, timed steps.
"""
import contextlib
import ctypes
import gc
import logging
import platform
import resource
import time
from typing import Dict, Iterator, List, Optional, Sequence, Union

import torch
import torch.nn as nn

#: Optimizer-wrapper modes of :func:`build_wrapper`.
WRAPPER_MODES = ('full', 'trpts')
_MiB = 2**20


# -- model, data, optimizer ---------------------------------------------------
def add_vit_args(parser, num_classes: int) -> None:
    """Add the ViT-shape options that :func:`vit_arch` consumes."""
    parser.add_argument(
        '--arch', default='b', help='ViT arch of mmpretrain (default: b)')
    parser.add_argument(
        '--embed-dims',
        type=int,
        help='custom ViT width (with --depth, --heads)')
    parser.add_argument('--depth', type=int, help='custom number of blocks')
    parser.add_argument('--heads', type=int, help='custom attention heads')
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument(
        '--patch',
        '--patch-size',
        dest='patch',
        type=int,
        default=16,
        help='ViT patch size (default: 16)')
    parser.add_argument('--num-classes', type=int, default=num_classes)


def vit_arch(arch: str = 'b',
             embed_dims: Optional[int] = None,
             depth: Optional[int] = None,
             heads: Optional[int] = None) -> Union[str, dict]:
    """A named ViT arch, or custom dims when all three are given.

    Args:
        arch (str): A name of ``VisionTransformer.arch_zoo``, e.g. ``'b'``.
        embed_dims (int, optional): Custom embedding dimension.
        depth (int, optional): Custom number of blocks.
        heads (int, optional): Custom number of attention heads.

    Returns:
        str or dict: ``arch``, or a custom arch dict (FFN width 4x).
    """
    custom = (embed_dims, depth, heads)
    if all(v is None for v in custom):
        return arch
    if any(v is None for v in custom):
        raise ValueError('custom dims need all of embed_dims, depth and '
                         f'heads; got {custom}')
    return dict(
        embed_dims=int(embed_dims),
        num_layers=int(depth),
        num_heads=int(heads),
        feedforward_channels=4 * embed_dims)


def model_config(arch: Union[str, dict] = 'b',
                 img_size: int = 224,
                 patch_size: int = 16,
                 num_classes: int = 100) -> dict:
    """The ``ImageClassifier`` config of the benchmark (plain ViT)."""
    from mmpretrain.models.backbones import VisionTransformer
    dims = (
        arch['embed_dims'] if isinstance(arch, dict) else
        VisionTransformer.arch_zoo[arch]['embed_dims'])
    return dict(
        type='ImageClassifier',
        data_preprocessor=dict(
            type='ClsDataPreprocessor',
            mean=[127.5] * 3,
            std=[127.5] * 3,
            to_rgb=True),
        backbone=dict(
            type='VisionTransformer',
            arch=arch,
            img_size=img_size,
            patch_size=patch_size,
            drop_path_rate=0.),
        head=dict(
            type='LinearClsHead',
            num_classes=num_classes,
            in_channels=dims,
            init_cfg=dict(type='TruncNormal', layer='Linear', std=0.02)))


def build_model(cfg: dict, device: str = 'cpu', seed: int = 0) -> nn.Module:
    """Build and randomly initialise the classifier on ``device``."""
    import mmtrpts  # noqa: F401  (stack fixes, registers components)
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    torch.manual_seed(seed)
    model = MODELS.build(cfg)
    model.init_weights()
    return model.to(device)


def random_batches(num_batches: int,
                   batch_size: int,
                   img_size: int,
                   num_classes: int,
                   seed: int = 0) -> List[dict]:
    """MMPretrain-style batches of random uint8 images and labels.

    Returns:
        list: ``dict(inputs=[uint8 CHW tensors], data_samples=[DataSample
        with gt_label])`` per batch, as ``pseudo_collate`` yields them.
    """
    from mmpretrain.structures import DataSample
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(num_batches):
        images = torch.randint(
            0,
            256, (batch_size, 3, img_size, img_size),
            dtype=torch.uint8,
            generator=generator)
        labels = torch.randint(
            0, num_classes, (batch_size, ), generator=generator)
        batches.append(
            dict(
                inputs=list(images.unbind(0)),
                data_samples=[
                    DataSample().set_gt_label(int(y)) for y in labels
                ]))
    return batches


class TimedLoader:
    """An in-memory dataloader that timestamps every batch request.

    ``seconds`` holds, per batch, the time between handing the batch out
    and the next request, i.e. the consumer's work on it (for the Fisher
    pass: preprocessing, forward, ``autograd.grad`` and squaring).

    Args:
        batches (Sequence[dict]): The batches, in order.
        sync (bool): Synchronise CUDA before each timestamp.
    """

    def __init__(self, batches: Sequence[dict], sync: bool = False):
        self.batches = list(batches)
        self.sync = sync
        self.stamps: List[float] = []

    def __len__(self) -> int:
        return len(self.batches)

    def _stamp(self) -> None:
        if self.sync:
            torch.cuda.synchronize()
        self.stamps.append(time.perf_counter())

    def __iter__(self) -> Iterator[dict]:
        self.stamps = []
        for batch in self.batches:
            self._stamp()
            yield batch
        self._stamp()

    @property
    def seconds(self) -> List[float]:
        """Seconds spent on each batch handed out."""
        return [b - a for a, b in zip(self.stamps, self.stamps[1:])]


def build_wrapper(model: nn.Module,
                  mode: str,
                  lr: float = 1e-3,
                  weight_decay: float = 0.05,
                  amp: bool = False):
    """The optimizer wrapper of ``mode`` (AdamW).

    With ``amp`` an ``AmpOptimWrapper`` (fp16 autocast and loss scaling;
    CUDA only), masked for ``'trpts'``.
    """
    from mmengine.optim import build_optim_wrapper
    cfg = dict(
        type='AmpOptimWrapper' if amp else 'OptimWrapper',
        optimizer=dict(type='AdamW', lr=lr, weight_decay=weight_decay))
    if mode == 'full':
        return build_optim_wrapper(model, cfg)
    if mode == 'trpts':
        return build_optim_wrapper(
            model, dict(cfg, constructor='FisherMaskOptimWrapperConstructor'))
    raise ValueError(f'mode must be one of {WRAPPER_MODES}, got {mode!r}')


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> Dict[str, int]:
    """Bytes of every tensor in ``optimizer.state``.

    Returns:
        dict: ``bytes`` (all tensors), ``buffer_bytes`` (tensors with
        ``dim() > 0``: AdamW's ``exp_avg``/``exp_avg_sq``), ``scalar_bytes``
        (0-dim tensors: AdamW's ``step`` counters) and ``entries`` (tensors
        that have a state).
    """
    buffers = scalars = 0
    for state in optimizer.state.values():
        for value in state.values():
            if torch.is_tensor(value):
                size = value.numel() * value.element_size()
                if value.dim() > 0:
                    buffers += size
                else:
                    scalars += size
    return dict(
        bytes=buffers + scalars,
        buffer_bytes=buffers,
        scalar_bytes=scalars,
        entries=len(optimizer.state))


def updated_entries(optimizer: torch.optim.Optimizer) -> int:
    """Entries the optimizer updates (numel of its parameters)."""
    return sum(p.numel() for group in optimizer.param_groups
               for p in group['params'])


# -- measurement helpers -----------------------------------------------------
class PeakMemory:
    """Peak memory of a process (CPU RSS) or of the CUDA allocator.

    Args:
        device (str): ``'cpu'`` or a CUDA device.
    """

    def __init__(self, device: str):
        self.cuda = torch.device(device).type == 'cuda'
        self.kind = ('cuda_max_memory_allocated'
                     if self.cuda else 'cpu_peak_rss (getrusage ru_maxrss)')

    def current(self) -> int:
        """Allocated CUDA bytes, or the resident set size (VmRSS)."""
        if self.cuda:
            return torch.cuda.memory_allocated()
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) * 1024
        return 0

    def peak(self) -> int:
        """Peak bytes since the start or the last successful reset."""
        if self.cuda:
            return torch.cuda.max_memory_allocated()
        # ru_maxrss is in KiB on Linux.
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def reset(self) -> bool:
        """Reset the peak to the current usage; False if impossible."""
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return True
        try:  # give freed heap memory back so RSS means live memory
            ctypes.CDLL('libc.so.6').malloc_trim(0)
        except (OSError, AttributeError):
            pass
        try:  # '5' resets the RSS high-water mark (Linux >= 4.0)
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')
        except OSError:
            return False
        return self.peak() <= self.current() + 16 * _MiB


def synchronize(device: str) -> None:
    """Wait for queued CUDA work on ``device`` (no-op elsewhere)."""
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize(torch.device(device))


def time_each_call(step, seconds: List[float], device: str):
    """Wrap ``step`` so that each call appends its duration to seconds."""

    def timed_step(**kwargs):
        synchronize(device)
        start = time.perf_counter()
        step(**kwargs)
        synchronize(device)
        seconds.append(time.perf_counter() - start)

    return timed_step


def resolve_device(device: str = 'auto') -> str:
    """``'auto'`` -> ``'cuda'`` when available, else ``'cpu'``."""
    if device == 'auto':
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    return device


def describe_device(device: str) -> str:
    """GPU name, or the CPU model from ``/proc/cpuinfo`` and thread count."""
    if torch.device(device).type == 'cuda':
        return torch.cuda.get_device_name(torch.device(device))
    name = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    name = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    return f'{name} (CPU, {torch.get_num_threads()} torch threads)'


@contextlib.contextmanager
def quiet_logs():
    """Only warnings and errors of mmengine's current logger (builders and
    constructors log one INFO line per parameter)."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
