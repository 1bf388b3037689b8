"""Cost of masked TR-PTS fine-tuning against dense full fine-tuning.

One call of :func:`run_mode` measures one mode in the current process; the
CLI ``tools/benchmarks/masked_optimizer.py`` runs every mode in a fresh
subprocess (so the CPU peak RSS of one mode cannot leak into the other) and
prints the comparison made by :func:`compare` and :func:`format_table`.

Modes:

- ``'full'``: dense full fine-tuning of the plain MMPretrain ViT: every
  parameter in a plain ``OptimWrapper`` (AdamW).
- ``'trpts'``: ``FisherMaskOptimWrapperConstructor`` -> a real Fisher pass
  (:func:`mmtrpts.engine.fisher_pass.compute_fisher_scores`) over random
  images -> the TR-PTS selection calibrated to ``target_ratio`` with the
  arguments ``FisherSelectionHook`` uses -> ``build_record`` -> ``arm``.

Measured per mode: optimizer-state bytes after the first step, the number
of updated entries, the peak memory of the training steps, the median
step time per sample and the median optimizer update (``optim_wrapper.step``)
time per step; for ``'trpts'`` also the Fisher pass time per sample.
Weights are random (a cost benchmark needs no checkpoint).

Memory: on CUDA ``torch.cuda.max_memory_allocated`` (its peak is reset
right before the training steps); on CPU the process peak RSS from
``getrusage(RUSAGE_SELF).ru_maxrss``.  The CPU high-water mark is reset
right before the training steps too (``/proc/self/clear_refs``, Linux >=
4.0, after ``malloc_trim``), so the Fisher pass of ``'trpts'`` is not
counted as training memory; its peak is reported as ``setup_peak_bytes``.
When the reset is not possible, ``peak_reset`` is False and the peak covers
the whole process.
"""
import ctypes
import gc
import platform
import resource
import statistics
import time
from typing import Dict, Iterator, List, Optional, Sequence, Union

import torch
import torch.nn as nn

MODES = ('full', 'trpts')
#: Labels of the rows of :func:`format_table` (tests look for them).
ROW_LABELS = ('Trainable (updated) params', 'Optimizer state (AdamW)',
              'Peak training memory', 'Peak increase over baseline',
              'Train step time / sample', 'Optimizer update time / step',
              'Fisher pass time / sample')
_MiB = 2**20


# -- model, data, optimizer ---------------------------------------------------
def add_vit_args(parser, num_classes: int) -> None:
    """Add the ViT-shape options that :func:`vit_arch` consumes."""
    parser.add_argument('--arch', default='b',
                        help='ViT arch of mmpretrain (default: b)')
    parser.add_argument('--embed-dims', type=int,
                        help='custom ViT width (with --depth, --heads)')
    parser.add_argument('--depth', type=int, help='custom number of blocks')
    parser.add_argument('--heads', type=int, help='custom attention heads')
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--patch', '--patch-size', dest='patch', type=int,
                        default=16, help='ViT patch size (default: 16)')
    parser.add_argument('--num-classes', type=int, default=num_classes)


def vit_arch(arch: str = 'b', embed_dims: Optional[int] = None,
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
    return dict(embed_dims=int(embed_dims), num_layers=int(depth),
                num_heads=int(heads), feedforward_channels=4 * embed_dims)


def model_config(arch: Union[str, dict] = 'b', img_size: int = 224,
                 patch_size: int = 16, num_classes: int = 100) -> dict:
    """The ``ImageClassifier`` config of the benchmark (plain ViT)."""
    from mmpretrain.models.backbones import VisionTransformer
    dims = (arch['embed_dims'] if isinstance(arch, dict) else
            VisionTransformer.arch_zoo[arch]['embed_dims'])
    return dict(
        type='ImageClassifier',
        data_preprocessor=dict(type='ClsDataPreprocessor',
                               mean=[127.5] * 3, std=[127.5] * 3,
                               to_rgb=True),
        backbone=dict(type='VisionTransformer', arch=arch,
                      img_size=img_size, patch_size=patch_size,
                      drop_path_rate=0.),
        head=dict(type='LinearClsHead', num_classes=num_classes,
                  in_channels=dims,
                  init_cfg=dict(type='TruncNormal', layer='Linear',
                                std=0.02)))


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


def random_batches(num_batches: int, batch_size: int, img_size: int,
                   num_classes: int, seed: int = 0) -> List[dict]:
    """MMPretrain-style batches of random uint8 images and labels.

    Returns:
        list: ``dict(inputs=[uint8 CHW tensors], data_samples=[DataSample
        with gt_label])`` per batch, as ``pseudo_collate`` yields them.
    """
    from mmpretrain.structures import DataSample
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(num_batches):
        images = torch.randint(0, 256, (batch_size, 3, img_size, img_size),
                               dtype=torch.uint8, generator=generator)
        labels = torch.randint(0, num_classes, (batch_size, ),
                               generator=generator)
        batches.append(
            dict(inputs=list(images.unbind(0)),
                 data_samples=[DataSample().set_gt_label(int(y))
                               for y in labels]))
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


def build_wrapper(model: nn.Module, mode: str, lr: float = 1e-3,
                  weight_decay: float = 0.05, amp: bool = False):
    """The optimizer wrapper of ``mode`` (AdamW).

    With ``amp`` an ``AmpOptimWrapper`` (fp16 autocast and loss scaling;
    CUDA only), masked for ``'trpts'``.
    """
    from mmengine.optim import build_optim_wrapper
    cfg = dict(type='AmpOptimWrapper' if amp else 'OptimWrapper',
               optimizer=dict(type='AdamW', lr=lr,
                              weight_decay=weight_decay))
    if mode == 'full':
        return build_optim_wrapper(model, cfg)
    if mode == 'trpts':
        return build_optim_wrapper(
            model, dict(cfg, constructor='FisherMaskOptimWrapperConstructor'))
    raise ValueError(f'mode must be one of {MODES}, got {mode!r}')


def optimizer_state_bytes(
        optimizer: torch.optim.Optimizer) -> Dict[str, int]:
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
    return dict(bytes=buffers + scalars, buffer_bytes=buffers,
                scalar_bytes=scalars, entries=len(optimizer.state))


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
        self.kind = ('cuda_max_memory_allocated' if self.cuda else
                     'cpu_peak_rss (getrusage ru_maxrss)')

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


def _timed(step, seconds: List[float], device: str):
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


# -- TR-PTS selection -----------------------------------------------------
def trpts_select(model: nn.Module, wrapper, loader, target_ratio: float,
                 tolerance: float = 0.05) -> tuple:
    """Fisher pass + TR-PTS selection as ``FisherSelectionHook`` does it.

    Defaults of the hook: ``rule='trpts'``, ``c_min=1``, ``c_max=None``,
    ``weight='density'``, ``rounding='round'``, matrix granularity,
    ``budget_denominator='backbone'``, random head.

    Args:
        model (nn.Module): The unwrapped classifier.
        wrapper: The unarmed masked wrapper (its ``roles``).
        loader: The Fisher batches.
        target_ratio (float): Trainable / backbone parameters.
        tolerance (float): Relative budget tolerance of the calibration.

    Returns:
        tuple: The selection record and the Fisher pass statistics.
    """
    from mmtrpts.engine.fisher_pass import compute_fisher_scores
    from mmtrpts.selection import budget_to_entries, calibrate_trpts
    from mmtrpts.selection.eligibility import FULL, MASKED
    from mmtrpts.selection.record import build_record
    roles = wrapper.roles
    named = dict(model.named_parameters())
    params = {n: p for n, p in named.items() if roles[n] == MASKED}
    scores, stats = compute_fisher_scores(model, loader, params,
                                          progress=False)
    full = [n for n, role in roles.items() if role == FULL]
    budget = dict(target_ratio=target_ratio,
                  denominator=sum(p.numel() for n, p in named.items()
                                  if n.startswith('backbone.')),
                  denominator_kind='backbone',
                  full=sum(named[n].numel() for n in full))
    target = budget_to_entries(target_ratio, budget['denominator'],
                               budget['full'])
    result = calibrate_trpts(scores, target, tolerance=tolerance,
                             c_min=1.0, c_max=None, weight='density',
                             rounding='round')
    del scores
    budget.update(trainable=result.num_selected + budget['full'])
    budget['realized_ratio'] = budget['trainable'] / budget['denominator']
    record = build_record(
        result, full, {n: p.shape for n, p in params.items()},
        budget=budget, fisher=dict(stats, max_batches=None), head='random')
    return record, stats


# -- one mode -------------------------------------------------------------
def run_mode(mode: str, arch: Union[str, dict] = 'b', batch: int = 8,
             steps: int = 3, target_ratio: float = 0.0034,
             fisher_batches: int = 2, device: str = 'auto',
             img_size: int = 224, patch_size: int = 16,
             num_classes: int = 100, seed: int = 0) -> dict:
    """Measure one mode in this process (run it in a fresh one).

    Runs one warm-up training step and then ``steps`` timed steps
    (``model.train_step`` with the mode's wrapper) at batch size ``batch``;
    the step time is their median, and so is the time of
    ``optim_wrapper.step`` inside them.  The Fisher time per sample is the
    median over the Fisher batches after the first (all of them when there
    is only one), since the first one carries one-off costs.

    Args:
        mode (str): ``'full'`` or ``'trpts'``.
        arch (str or dict): See :func:`vit_arch`.
        batch (int): Images per training (and Fisher) batch.
        steps (int): Timed training steps after the warm-up step.
        target_ratio (float): TR-PTS budget (trainable / backbone).
        fisher_batches (int): Batches of the Fisher pass.
        device (str): ``'auto'``, ``'cpu'`` or ``'cuda[:i]'``.
        img_size (int): Image side.
        patch_size (int): ViT patch size.
        num_classes (int): Classes of the head.
        seed (int): Seed of the weights and the data.

    Returns:
        dict: JSON-serialisable measurements (bytes, seconds, counts).
    """
    if mode not in MODES:
        raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
    if steps < 1 or batch < 1 or fisher_batches < 1:
        raise ValueError('steps, batch and fisher_batches must be >= 1')
    device = resolve_device(device)
    cfg = model_config(arch, img_size, patch_size, num_classes)
    import mmengine.optim  # noqa: F401  (imports inside the baseline)
    import mmpretrain.models  # noqa: F401
    import mmtrpts.engine  # noqa: F401
    memory = PeakMemory(device)
    synchronize(device)
    baseline = memory.peak()
    model = build_model(cfg, device, seed)
    wrapper = build_wrapper(model, mode)
    named = dict(model.named_parameters())
    total = sum(p.numel() for p in named.values())
    backbone = sum(p.numel() for n, p in named.items()
                   if n.startswith('backbone.'))
    result = dict(mode=mode, device=device,
                  device_name=describe_device(device),
                  torch=torch.__version__, threads=torch.get_num_threads(),
                  arch=arch, img_size=img_size, patch_size=patch_size,
                  num_classes=num_classes, batch=batch, steps=steps,
                  total_params=total, backbone_params=backbone)
    sync = torch.device(device).type == 'cuda'
    if mode == 'trpts':
        loader = TimedLoader(
            random_batches(fisher_batches, batch, img_size, num_classes,
                           seed + 1), sync=sync)
        start = time.perf_counter()
        record, stats = trpts_select(model, wrapper, loader, target_ratio)
        fisher_seconds = loader.seconds
        select_seconds = time.perf_counter() - start - sum(fisher_seconds)
        wrapper.arm(record)
        del loader
        # The first batch carries one-off costs (as the warm-up step).
        timed = fisher_seconds[1:] or fisher_seconds
        settings = record['settings']
        result.update(
            target_ratio=target_ratio,
            realized_ratio=record['budget']['realized_ratio'],
            selection_trainable=record['budget']['trainable'],
            selected_entries=settings['realised_entries'],
            target_entries=settings['target_entries'],
            calibration=settings['calibration'],
            m_percent=settings.get('m_percent'),
            c_min=settings.get('c_min'),
            fisher_batches=stats['num_batches'],
            fisher_samples=stats['num_samples'],
            fisher_batch_seconds=fisher_seconds,
            fisher_seconds_per_sample=statistics.median(timed) / batch,
            selection_seconds=select_seconds)
    result['trainable_params'] = (wrapper.num_updated() if mode == 'trpts'
                                  else updated_entries(wrapper.optimizer))
    batches = random_batches(steps + 1, batch, img_size, num_classes,
                             seed + 2)
    model.train()
    synchronize(device)
    setup_peak = memory.peak()
    reset = memory.reset()
    pre_train = memory.current()
    step_seconds, update_seconds, cpu_seconds = [], [], []
    state = None
    wrapper.step = _timed(wrapper.step, update_seconds, device)
    for i, data in enumerate(batches):
        synchronize(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        model.train_step(data, wrapper)
        synchronize(device)
        if i:  # step 0 is the warm-up
            step_seconds.append(time.perf_counter() - start)
            cpu_seconds.append(time.process_time() - cpu_start)
        else:
            state = optimizer_state_bytes(wrapper.optimizer)
    peak = memory.peak()
    del wrapper.step  # back to the class's method
    result.update(
        optimizer_state_bytes=state['bytes'],
        optimizer_state_buffer_bytes=state['buffer_bytes'],
        optimizer_state_scalar_bytes=state['scalar_bytes'],
        optimizer_state_entries=state['entries'],
        memory_kind=memory.kind, peak_reset=reset, baseline_bytes=baseline,
        setup_peak_bytes=setup_peak, pre_train_bytes=pre_train,
        peak_bytes=peak, peak_increase_bytes=peak - baseline,
        step_seconds=step_seconds,
        step_seconds_per_sample=statistics.median(step_seconds) / batch,
        step_cpu_seconds=cpu_seconds,
        step_cpu_utilisation=sum(cpu_seconds) / sum(step_seconds),
        update_seconds=update_seconds[1:],
        update_seconds_per_step=statistics.median(update_seconds[1:]))
    if mode == 'trpts':
        result['state_numel'] = wrapper.state_numel()
        result['fisher_to_step'] = (result['fisher_seconds_per_sample'] /
                                    result['step_seconds_per_sample'])
    return result


# -- comparison -----------------------------------------------------------
def compare(full: dict, trpts: dict) -> Dict[str, float]:
    """Ratios TR-PTS / full fine-tuning of two :func:`run_mode` results."""
    keys = ('trainable_params', 'optimizer_state_bytes',
            'optimizer_state_buffer_bytes', 'peak_bytes',
            'peak_increase_bytes', 'step_seconds_per_sample',
            'update_seconds_per_step')
    ratios = {k: trpts[k] / full[k] if full[k] else float('nan')
              for k in keys}
    ratios['fisher_to_trpts_step'] = trpts['fisher_to_step']
    ratios['fisher_to_full_step'] = (trpts['fisher_seconds_per_sample'] /
                                     full['step_seconds_per_sample'])
    return ratios


def _bytes(num: float) -> str:
    if abs(num) >= 2**30:
        return f'{num / 2**30:.2f} GiB'
    if abs(num) >= _MiB:
        return f'{num / _MiB:.1f} MiB'
    return f'{num / 1024:.1f} KiB'


def _ms(seconds: float) -> str:
    return f'{1e3 * seconds:.1f} ms'


def format_table(full: dict, trpts: dict) -> str:
    """One fixed-width table: absolute values and TR-PTS / full ratios."""
    ratios = compare(full, trpts)
    total = full['total_params']
    rows = [
        (ROW_LABELS[0], f'{full["trainable_params"]:,} (100%)',
         f'{trpts["trainable_params"]:,} '
         f'({100 * trpts["trainable_params"] / total:.3f}%)',
         f'{100 * ratios["trainable_params"]:.3f}%'),
        (ROW_LABELS[1], _bytes(full['optimizer_state_bytes']),
         _bytes(trpts['optimizer_state_bytes']),
         f'{ratios["optimizer_state_bytes"]:.5f}'),
        (ROW_LABELS[2], _bytes(full['peak_bytes']),
         _bytes(trpts['peak_bytes']), f'{ratios["peak_bytes"]:.3f}'),
        (ROW_LABELS[3], _bytes(full['peak_increase_bytes']),
         _bytes(trpts['peak_increase_bytes']),
         f'{ratios["peak_increase_bytes"]:.3f}'),
        (ROW_LABELS[4], _ms(full['step_seconds_per_sample']),
         _ms(trpts['step_seconds_per_sample']),
         f'{ratios["step_seconds_per_sample"]:.3f}'),
        (ROW_LABELS[5], _ms(full['update_seconds_per_step']),
         _ms(trpts['update_seconds_per_step']),
         f'{ratios["update_seconds_per_step"]:.3f}'),
        (ROW_LABELS[6], '-', _ms(trpts['fisher_seconds_per_sample']),
         f'{ratios["fisher_to_trpts_step"]:.3f} x TR-PTS step'),
    ]
    head = ('quantity', 'full FT', 'TR-PTS', 'TR-PTS / full')
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    fmt = '  '.join(['{:<%d}' % widths[0]] +
                    ['{:>%d}' % w for w in widths[1:]])
    lines = [fmt.format(*head), '  '.join('-' * w for w in widths)]
    lines += [fmt.format(*r) for r in rows]
    return '\n'.join(lines)
