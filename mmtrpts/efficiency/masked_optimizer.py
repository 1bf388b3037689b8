"""Cost of masked TR-PTS fine-tuning against dense full fine-tuning.

One call of :func:`run_mode` measures one mode in the current process; the
CLI ``tools/efficiency/masked_optimizer.py`` runs every mode in a fresh
subprocess (so the CPU peak RSS of one mode cannot leak into the other) and
prints the comparison made by :func:`compare` and :func:`format_table`.

Modes:

- ``'full'``: dense full fine-tuning of the plain MMPretrain ViT: every
  parameter in a plain ``OptimWrapper`` (AdamW).
- ``'trpts'``: ``FisherMaskOptimWrapperConstructor`` -> the selection
  pipeline ``FisherSelectionHook`` runs (:class:`mmtrpts.engine.
  ParameterSelection`, TR-PTS calibrated to ``target_ratio``) over random
  images -> ``arm``.

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
import statistics
import time
from typing import Dict, Union

import torch

from ..engine import ParameterSelection
from .common import (WRAPPER_MODES, PeakMemory, TimedLoader, build_model,
                     build_wrapper, describe_device, model_config,
                     optimizer_state_bytes, random_batches, resolve_device,
                     synchronize, time_each_call, updated_entries)

MODES = WRAPPER_MODES
#: Labels of the rows of :func:`format_table` (tests look for them).
ROW_LABELS = ('Trainable (updated) params', 'Optimizer state (AdamW)',
              'Peak training memory', 'Peak increase over baseline',
              'Train step time / sample', 'Optimizer update time / step',
              'Fisher pass time / sample')
_MiB = 2**20


# -- one mode -------------------------------------------------------------
def run_mode(mode: str,
             arch: Union[str, dict] = 'b',
             batch: int = 8,
             steps: int = 3,
             target_ratio: float = 0.0034,
             fisher_batches: int = 2,
             device: str = 'auto',
             img_size: int = 224,
             patch_size: int = 16,
             num_classes: int = 100,
             seed: int = 0) -> dict:
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
    result = dict(
        mode=mode,
        device=device,
        device_name=describe_device(device),
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        arch=arch,
        img_size=img_size,
        patch_size=patch_size,
        num_classes=num_classes,
        batch=batch,
        steps=steps,
        total_params=total,
        backbone_params=backbone)
    sync = torch.device(device).type == 'cuda'
    if mode == 'trpts':
        loader = TimedLoader(
            random_batches(fisher_batches, batch, img_size, num_classes,
                           seed + 1),
            sync=sync)
        start = time.perf_counter()
        selection = ParameterSelection(
            target_ratio=target_ratio, progress=False)
        record = selection.run_on_loader(model, loader, wrapper.roles)
        stats = record['fisher']
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
    result['trainable_params'] = (
        wrapper.num_updated()
        if mode == 'trpts' else updated_entries(wrapper.optimizer))
    batches = random_batches(steps + 1, batch, img_size, num_classes, seed + 2)
    model.train()
    synchronize(device)
    setup_peak = memory.peak()
    reset = memory.reset()
    pre_train = memory.current()
    step_seconds, update_seconds, cpu_seconds = [], [], []
    state = None
    wrapper.step = time_each_call(wrapper.step, update_seconds, device)
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
        memory_kind=memory.kind,
        peak_reset=reset,
        baseline_bytes=baseline,
        setup_peak_bytes=setup_peak,
        pre_train_bytes=pre_train,
        peak_bytes=peak,
        peak_increase_bytes=peak - baseline,
        step_seconds=step_seconds,
        step_seconds_per_sample=statistics.median(step_seconds) / batch,
        step_cpu_seconds=cpu_seconds,
        step_cpu_utilisation=sum(cpu_seconds) / sum(step_seconds),
        update_seconds=update_seconds[1:],
        update_seconds_per_step=statistics.median(update_seconds[1:]))
    if mode == 'trpts':
        result['state_numel'] = wrapper.state_numel()
        result['fisher_to_step'] = (
            result['fisher_seconds_per_sample'] /
            result['step_seconds_per_sample'])
    return result


# -- comparison -----------------------------------------------------------
def compare(full: dict, trpts: dict) -> Dict[str, float]:
    """Ratios TR-PTS / full fine-tuning of two :func:`run_mode` results."""
    keys = ('trainable_params', 'optimizer_state_bytes',
            'optimizer_state_buffer_bytes', 'peak_bytes',
            'peak_increase_bytes', 'step_seconds_per_sample',
            'update_seconds_per_step')
    ratios = {k: trpts[k] / full[k] if full[k] else float('nan') for k in keys}
    ratios['fisher_to_trpts_step'] = trpts['fisher_to_step']
    ratios['fisher_to_full_step'] = (
        trpts['fisher_seconds_per_sample'] / full['step_seconds_per_sample'])
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
