"""Efficiency of the implemented fine-tuning methods against full fine-tuning.

:func:`efficiency_report` measures every method of
:data:`~mmtrpts.efficiency.methods.METHODS` in one run on this
machine: trainable parameters, backbone GFLOPs per image (attention
counted), inference images/s, training step time and peak training memory,
each also as a ratio to full fine-tuning (``value / full value``).  Weights
and images are random: this measures cost, not accuracy.

Protocol:

1. Child processes, started while this process is still small: one runs
   the Fisher pass and the TR-PTS selection
   (:func:`~mmtrpts.efficiency.masked_optimizer.trpts_select`) and saves the
   record, shared by every method that needs it; then one fresh process
   per method measures its peak training memory (:func:`training_memory`):
   a CPU process cannot un-count earlier allocations from its peak RSS,
   and one process per method keeps the other models out of the peak on
   CUDA too.
2. In this process (:func:`measure`), all models with the same random
   weights: FLOPs per inference network; inference forwards and training
   steps (``model.train_step``) timed one by one, interleaved across
   networks and methods (as the token benchmark times its forwards), so
   that drifting machine load hits all methods alike.
"""
import contextlib
import gc
import json
import os.path as osp
import statistics
import subprocess
import sys
import tempfile
from functools import partial
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn as nn

from ..complexity.params import count_parameters
from ..engine import ParameterSelection
from ..selection.eligibility import assign_roles
from .common import (PeakMemory, describe_device, random_batches,
                     resolve_device, synchronize, updated_entries)
from .methods import METHODS, Method
from .token_selection import (build_classifier, compress_schedule,
                              copy_weights, flop_report,
                              interleaved_forward_times, interleaved_times,
                              timed_and_warmup_runs, token_schedule,
                              unsupported_note)

#: Measured columns; each ratio is ``value / value of full fine-tuning``.
RATIO_KEYS = ('trainable_params', 'gflops', 'images_per_second',
              'step_time_ms', 'train_memory_bytes')
#: Column headers of :func:`format_table` (tests look for them).
COLUMNS = ('method', 'trainable params (% of backbone)', 'GFLOPs',
           'images/s', 'train step (ms)', 'train memory', 'params / full',
           'GFLOPs / full', 'images/s / full', 'step / full',
           'memory / full')
_MiB = 2**20


class ReportSettings(NamedTuple):
    """What is measured, and how (JSON-serialisable for the children).

    Attributes:
        arch (str | dict): ViT arch name or custom arch dict.
        img_size (int): Input resolution.
        patch_size (int): ViT patch size.
        num_classes (int): Classes of the linear head.
        batch (int): Images per inference forward and per training step.
        steps (int): Timed training steps per method after one warm-up.
        runs (int): Forwards per inference network; the first 25% are
            warm-up.
        device (str): ``'cpu'`` or ``'cuda[:i]'`` (resolved).
        amp (bool): fp16 autocast for inference and ``AmpOptimWrapper``
            for training (CUDA only).
        target_ratio (float): TR-PTS budget, trainable / backbone params.
        fisher_batches (int): Batches of the Fisher pass.
        keep_rate (float): Token keep rate of the keep/fuse blocks.
        keep_layers (tuple): 0-based keep/fuse blocks (fixed).
        seed (int): Seed of the weights and the data.
    """
    arch: Union[str, dict] = 'b'
    img_size: int = 224
    patch_size: int = 16
    num_classes: int = 100
    batch: int = 8
    steps: int = 3
    runs: int = 20
    device: str = 'cpu'
    amp: bool = False
    target_ratio: float = 0.0034
    fisher_batches: int = 2
    keep_rate: float = 0.95
    keep_layers: Tuple[int, ...] = (3, 6, 9)
    seed: int = 0


def build_methods(settings: ReportSettings) -> Dict[str, Method]:
    """Every registered method, built for ``settings``."""
    return {name: builder(settings._asdict())
            for name, builder in METHODS.items()}


def build_method(method: Method, settings: ReportSettings,
                 selection: Optional[dict] = None,
                 weights_from: Optional[nn.Module] = None
                 ) -> Tuple[nn.Module, object]:
    """The classifier of ``method`` on the device, and its optim wrapper.

    Args:
        method (Method): The method.
        settings (ReportSettings): Model size, device, AMP and seed.
        selection (dict, optional): The TR-PTS selection record.
        weights_from (nn.Module, optional): Copy its weights before the
            wrapper is built (masked wrappers copy the selected entries
            when armed).

    Returns:
        tuple: The model (eval mode) and the optimizer wrapper.
    """
    model = build_classifier(method.backbone, settings.arch,
                             settings.img_size, settings.patch_size,
                             settings.num_classes, settings.device,
                             settings.seed)
    if weights_from is not None:
        copy_weights(weights_from, model)
    return model, method.build_wrapper(model, selection, settings.amp)


# -- work done in fresh processes ---------------------------------------------
_CHILD = ('import json, sys\n'
          'from mmtrpts.efficiency import report as efficiency_report\n'
          'worker = getattr(efficiency_report, sys.argv[1])\n'
          'result = worker(**json.loads(sys.argv[2]))\n'
          'with open(sys.argv[3], "w") as f:\n'
          '    json.dump(result, f)\n')


def in_fresh_process(worker: str, out: str, **kwargs) -> dict:
    """Run ``worker(**kwargs)`` of this module in a fresh interpreter.

    Args:
        worker (str): :func:`select_parameters` or :func:`training_memory`.
        out (str): JSON file the child writes its result to.
        **kwargs: JSON-serialisable arguments of the worker.

    Returns:
        dict: The worker's result.
    """
    proc = subprocess.run(
        [sys.executable, '-c', _CHILD, worker, json.dumps(kwargs), out],
        capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f'{worker} failed in a child process (exit '
                           f'{proc.returncode}):\n{proc.stderr[-6000:]}')
    with open(out) as f:
        return json.load(f)


def select_parameters(settings: dict, path: str) -> dict:
    """Fisher pass + TR-PTS selection on the dense ViT; save the record.

    The pass runs over ``fisher_batches`` random batches (as the masked
    benchmark's), on the dense model: token selection is off in it.

    Returns:
        dict: The budget of the saved selection.
    """
    s = ReportSettings(**settings)
    model = build_classifier(dict(type='VisionTransformer'), s.arch,
                             s.img_size, s.patch_size, s.num_classes,
                             s.device, s.seed)
    batches = random_batches(s.fisher_batches, s.batch, s.img_size,
                             s.num_classes, s.seed + 1)
    selection = ParameterSelection(target_ratio=s.target_ratio,
                                   progress=False)
    record = selection.run_on_loader(model, batches,
                                     assign_roles(model))
    stats = record['fisher']
    torch.save(record, path)
    budget, rule = record['budget'], record['settings']
    return dict(target_ratio=s.target_ratio,
                realized_ratio=budget['realized_ratio'],
                trainable=budget['trainable'],
                selected_entries=rule['realised_entries'],
                m_percent=rule.get('m_percent'),
                calibration=rule['calibration'],
                fisher_samples=stats['num_samples'])


def training_memory(name: str, settings: dict,
                    selection_path: Optional[str] = None) -> dict:
    """Peak memory of ``1 + steps`` training steps of one method.

    Run it in a fresh process.  The baseline is the memory after the
    imports (CPU: resident set size; CUDA: allocated bytes); the peak
    high-water mark is reset after the model and wrapper are built and
    read after the steps (CPU: peak RSS; CUDA: ``max_memory_allocated``).

    Returns:
        dict: ``train_memory_bytes`` (peak - baseline), ``peak_bytes``,
        ``baseline_bytes``, ``memory_kind`` and ``peak_reset`` (False if
        the CPU high-water mark could not be reset).
    """
    import mmengine.optim  # noqa: F401  (imports inside the baseline)
    import mmpretrain.models  # noqa: F401
    import mmtrpts.engine  # noqa: F401
    s = ReportSettings(**settings)
    method = METHODS[name](settings)
    memory = PeakMemory(s.device)
    gc.collect()
    synchronize(s.device)
    baseline = memory.current()
    selection = (torch.load(selection_path, weights_only=True) if method.needs_selection
                 else None)
    model, wrapper = build_method(method, s, selection)
    data = random_batches(1, s.batch, s.img_size, s.num_classes,
                          s.seed + 2)[0]
    model.train()
    reset = memory.reset()
    for _ in range(s.steps + 1):
        model.train_step(data, wrapper)
    synchronize(s.device)
    peak = memory.peak()
    return dict(train_memory_bytes=peak - baseline, peak_bytes=peak,
                baseline_bytes=baseline, memory_kind=memory.kind,
                peak_reset=reset)


# -- work done in this process ------------------------------------------------
def _autocast(settings: ReportSettings):
    if not settings.amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type='cuda', dtype=torch.float16)


def measure(settings: ReportSettings, methods: Dict[str, Method],
            selection: Optional[dict] = None,
            log: Optional[Callable[[str], None]] = None) -> Dict[str, dict]:
    """Parameters, FLOPs, inference and training time in this process.

    Every model gets the weights of the first (full fine-tuning) model.
    Methods with the same backbone config share one inference network:
    its FLOPs and throughput are measured once and reported for each.

    Args:
        settings (ReportSettings): What to measure.
        methods (dict[str, Method]): The methods, full fine-tuning first.
        selection (dict, optional): The TR-PTS selection record.
        log (callable, optional): Progress messages.

    Returns:
        dict: One row per method (see :func:`efficiency_report`), without
        memory and ratios.
    """
    log = log or (lambda message: None)
    s = settings
    models, wrappers, rows = {}, {}, {}
    networks: Dict[str, str] = {}  # backbone config -> first method
    reference = None  # the full fine-tuning model: its weights for all
    for name, method in methods.items():
        models[name], wrappers[name] = build_method(method, s, selection,
                                                    reference)
        if reference is None:
            reference = models[name]
        counts = count_parameters(models[name])
        trainable = updated_entries(wrappers[name].optimizer)
        key = json.dumps(method.backbone, sort_keys=True)
        rows[name] = dict(
            label=method.label, backbone=method.backbone,
            inference_network=networks.setdefault(key, name),
            total_params=counts['total'],
            backbone_params=counts['backbone_total'],
            trainable_params=trainable,
            trainable_percent_of_backbone=(100 * trainable /
                                           counts['backbone_total']))
        log(f'built {name}: {trainable:,} trainable parameters')

    generator = torch.Generator().manual_seed(s.seed)
    inputs = torch.randn(s.batch, 3, s.img_size, s.img_size,
                         generator=generator).to(s.device)
    nets = {name: models[name] for name in networks.values()}
    flops = {}
    for name, model in nets.items():
        counts = token_schedule(model, inputs[:1])
        flops[name] = dict(tokens_per_block=counts,
                           token_schedule=compress_schedule(counts),
                           **flop_report(model, inputs.shape[1:]))
        log(f'{name}: {flops[name]["backbone_flops"] / 1e9:.4f} GFLOPs, '
            f'tokens {flops[name]["token_schedule"]}')

    timed, warmup = timed_and_warmup_runs(s.runs)
    log(f'timing {s.runs} interleaved forwards of {len(nets)} inference '
        'network(s) ...')
    with _autocast(s):
        forwards = interleaved_forward_times(nets, inputs, s.runs, s.device)
    for model in models.values():
        model.train()
    data = random_batches(1, s.batch, s.img_size, s.num_classes,
                          s.seed + 2)[0]
    log(f'timing 1 + {s.steps} interleaved training steps of '
        f'{len(models)} methods ...')
    steps = interleaved_times(
        {name: partial(model.train_step, data, wrappers[name])
         for name, model in models.items()}, s.steps + 1, s.device)

    for name, row in rows.items():
        net = row['inference_network']
        seconds = forwards[net]['seconds'][warmup:]
        step_seconds = steps[name]['seconds'][1:]
        row.update(
            flops[net], gflops=flops[net]['backbone_flops'] / 1e9,
            tokens_final=flops[net]['tokens_per_block'][-1],
            forward_seconds=seconds, timed_runs=timed, warmup_runs=warmup,
            images_per_second=s.batch / statistics.median(seconds),
            forward_cpu_utilisation=(
                sum(forwards[net]['cpu_seconds'][warmup:]) / sum(seconds)),
            step_seconds=step_seconds,
            step_time_ms=1e3 * statistics.median(step_seconds),
            step_cpu_utilisation=(sum(steps[name]['cpu_seconds'][1:]) /
                                  sum(step_seconds)))
    return rows


def efficiency_report(settings: ReportSettings,
                      log: Optional[Callable[[str], None]] = None) -> dict:
    """Measure every registered method in one run (see the module doc).

    Args:
        settings (ReportSettings): What to measure; ``device`` may be
            ``'auto'``.
        log (callable, optional): Progress messages (e.g. to stderr).

    Returns:
        dict: ``settings``, ``device_name``, ``torch``, ``threads``,
        ``selection`` (the TR-PTS budget, or None) and ``methods``: per
        method its row with the :data:`RATIO_KEYS` values, ``ratios``
        (``value / full value`` of each) and the raw measurements.
    """
    log = log or (lambda message: None)
    s = settings._replace(device=resolve_device(settings.device),
                          keep_layers=tuple(settings.keep_layers))
    if s.amp and torch.device(s.device).type != 'cuda':
        raise ValueError('AMP needs CUDA (AmpOptimWrapper refuses CPU)')
    methods = build_methods(s)
    if next(iter(methods)) != 'full':
        raise ValueError("the first method must be 'full' (the reference)")
    selection = summary = None
    memory = {}
    with tempfile.TemporaryDirectory() as workdir:
        path = osp.join(workdir, 'selection.pth')
        if any(m.needs_selection for m in methods.values()):
            log('Fisher pass and TR-PTS selection (child process) ...')
            summary = in_fresh_process(
                'select_parameters', osp.join(workdir, 'select.json'),
                settings=s._asdict(), path=path)
            selection = torch.load(path, weights_only=True)
        for name, method in methods.items():
            log(f'peak training memory of {name} (fresh process) ...')
            memory[name] = in_fresh_process(
                'training_memory', osp.join(workdir, f'{name}.json'),
                name=name, settings=s._asdict(),
                selection_path=path if method.needs_selection else None)
    rows = measure(s, methods, selection, log)
    for name, row in rows.items():  # 'full' first: complete when read
        row.update(memory[name])
        row['ratios'] = {k: row[k] / rows['full'][k] for k in RATIO_KEYS}
    return dict(settings=s._asdict(), device_name=describe_device(s.device),
                torch=torch.__version__, threads=torch.get_num_threads(),
                selection=summary, methods=rows)


# -- report -------------------------------------------------------------------
def format_table(report: dict) -> str:
    """One fixed-width table of :func:`efficiency_report`'s rows.

    Columns (:data:`COLUMNS`): method | trainable params (% of the backbone
    parameters) | backbone GFLOPs per image | inference images/s | median
    training step | peak training memory | the ratio of each of the five
    to full fine-tuning.
    """
    rows = []
    for res in report['methods'].values():
        ratios = res['ratios']
        rows.append((
            res['label'],
            f'{res["trainable_params"]:,} '
            f'({res["trainable_percent_of_backbone"]:.3f}%)',
            f'{res["gflops"]:.3f}', f'{res["images_per_second"]:.2f}',
            f'{res["step_time_ms"]:.1f}',
            f'{res["train_memory_bytes"] / _MiB:.1f} MiB',
            f'{ratios["trainable_params"]:.5f}',
            *(f'{ratios[k]:.3f}' for k in RATIO_KEYS[1:])))
    widths = [max(len(r[i]) for r in rows + [COLUMNS])
              for i in range(len(COLUMNS))]
    fmt = ' | '.join(['{:<%d}' % widths[0]] +
                     ['{:>%d}' % w for w in widths[1:]])
    lines = [fmt.format(*COLUMNS), '-+-'.join('-' * w for w in widths)]
    lines += [fmt.format(*r) for r in rows]
    return '\n'.join(lines)


def _arch_name(settings: dict) -> str:
    arch = settings['arch']
    name = (f'ViT-{arch}' if isinstance(arch, str) else
            'ViT(embed_dims={embed_dims}, depth={num_layers}, '
            'heads={num_heads})'.format(**arch))
    return f'{name}/{settings["patch_size"]}, {settings["img_size"]} px'


def _setup_lines(report: dict) -> List[str]:
    s, methods = report['settings'], report['methods']
    full = methods['full']
    lines = [
        f'model: {_arch_name(s)}, {s["num_classes"]} classes, '
        f'{full["total_params"]:,} params ({full["backbone_params"]:,} '
        f'backbone), random weights shared by all methods; AdamW lr 1e-3 '
        f'wd 0.05; batch {s["batch"]} (inference and training); '
        f'{"fp16 autocast (AMP)" if s["amp"] else "fp32"}'
    ]
    sel = report['selection']
    if sel:
        fixed = sel['trainable'] - sel['selected_entries']
        lines.append(
            f'TR-PTS selection: target {100 * sel["target_ratio"]:.3f}% of '
            f'the backbone -> realised {100 * sel["realized_ratio"]:.3f}% '
            f'({sel["selected_entries"]:,} selected entries of the masked '
            f'matrices + {fixed:,} in biases and head; calibration '
            f'{sel["calibration"]}, M={sel["m_percent"]:.4g}%); Fisher pass '
            f'over {sel["fisher_samples"]} random images on the dense ViT, '
            'shared by the TR-PTS rows')
    reduced = [r for r in methods.values()
               if r['tokens_final'] < full['tokens_final']]
    if reduced:
        lines.append(
            f'token keep/fuse: rho={s["keep_rate"]} (floor, normalised '
            f'fusion) at 0-based blocks {list(s["keep_layers"])}, FIXED '
            'here: TR-PTS puts them in the parameter-sparsest blocks of '
            "the task's selection, which depend on the data; tokens " +
            '; '.join(f'{r["label"]}: {r["token_schedule"]}'
                      for r in reduced))
    return lines


def _notes(report: dict) -> List[str]:
    s, methods = report['settings'], report['methods']
    full = methods['full']
    runs, warmup = s['runs'], full['warmup_runs']
    shared = {}
    for res in methods.values():
        shared.setdefault(res['inference_network'], []).append(res['label'])
    groups = '; '.join(', '.join(labels) for labels in shared.values()
                       if len(labels) > 1)
    if full['memory_kind'].startswith('cuda'):
        memory = ('torch.cuda.max_memory_allocated, peak reset after the '
                  'model and wrapper are built, minus the bytes allocated '
                  'before building')
    else:
        resets = all(r['peak_reset'] for r in methods.values())
        memory = ('peak RSS (getrusage ru_maxrss) minus the RSS after the '
                  'imports; the high-water mark is reset after the model '
                  'and wrapper are built' +
                  ('' if resets else ' -- reset FAILED for some methods: '
                   'their peaks include building'))
    notes = [
        'trainable params = entries the optimizer updates (full: all; '
        'linear probing: the head, backbone requires_grad=False; TR-PTS: '
        'the selected entries + biases + head, as the armed masked wrapper '
        'reports); % of the backbone parameters, head in the numerator (so '
        'full fine-tuning is above 100%)',
        unsupported_note(dict(settings=dict(dense=full, **methods))),
        f'images/s: the whole classifier, model(x, mode="tensor"), eval + '
        f'torch.no_grad(), one fixed batch; {runs} forwards per inference '
        f'network ({warmup} warm-up), each timed on its own (CUDA '
        f'synchronised), interleaved across networks in rotated order; '
        f'images/s = batch / median forward time; rows with the same '
        f'backbone share one network and its measurement'
        f'{" (" + groups + ")" if groups else ""}',
        f'train step: model.train_step (preprocessing, forward, loss, '
        f'backward, optimizer step, zero_grad) on one fixed batch; 1 '
        f'warm-up + {s["steps"]} timed steps per method, each timed on its '
        f'own, interleaved across methods in rotated order; median',
        f'train memory: one fresh process per method, 1 + {s["steps"]} '
        f'training steps; {memory}',
        'ratios = value / value of full fine-tuning, exactly as in the '
        'JSON (images/s: above 1 is faster; the others: below 1 is '
        'cheaper); printed, nothing is asserted',
    ]
    if not full['memory_kind'].startswith('cuda'):
        forward = [r['forward_cpu_utilisation'] for r in methods.values()]
        step = [r['step_cpu_utilisation'] for r in methods.values()]
        notes.append(
            f'process CPU time / wall time: forwards {min(forward):.2f}-'
            f'{max(forward):.2f}, training steps {min(step):.2f}-'
            f'{max(step):.2f} ({report["threads"]} torch threads; well '
            'below the thread count means the host took CPU away)')
    return notes


def format_report(report: dict) -> str:
    """The printed report: set-up lines, the table and notes.

    Args:
        report (dict): :func:`efficiency_report`'s result with ``command``,
            ``wall_seconds`` and ``load_average_before``/``_after`` (None
            where unavailable) added.
    """
    import mmengine
    import mmpretrain
    lines = [
        'Efficiency of the implemented methods vs full fine-tuning',
        f'command: {report["command"]}',
        f'device: {report["device_name"]}',
        f'torch {report["torch"]}, mmpretrain {mmpretrain.__version__}, '
        f'mmengine {mmengine.__version__}; {report["threads"]} torch '
        f'threads; load average (1/5/15 min) before '
        f'{report["load_average_before"]}, after '
        f'{report["load_average_after"]}',
        *_setup_lines(report), '',
        format_table(report), ''
    ]
    lines += [f'* {n}' for n in _notes(report)]
    lines.append(f'* wall time {report["wall_seconds"]:.1f} s (child '
                 'processes included)')
    return '\n'.join(lines)
