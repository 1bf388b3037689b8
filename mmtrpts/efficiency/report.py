"""Efficiency of the implemented fine-tuning methods, in one run.

:func:`efficiency_report` measures every method of
:data:`~mmtrpts.efficiency.methods.METHODS` in one run on this machine:
trainable parameters, gradient elements communicated per step (the numel
of the parameters that still require gradients once the method's wrapper
and training form are built: what DDP all-reduces every step), optimizer
state elements, backbone GFLOPs per image (attention counted), inference
images/s, training step time and peak training memory, each also as a
ratio to full fine-tuning (``ratios``) and to the frozen-weights bound
(``bound_ratios``: every weight frozen, only biases and the head trained).
It also measures the cost of the TR-PTS Fisher pass and prints the
issue's targets as checks.  Weights and images are random: this measures
cost, not accuracy.

Protocol:

1. Child processes, started while this process is still small.  The
   first (:func:`select_parameters`) measures the TR-PTS Fisher pass (time
   per sample, peak memory) on the dense ViT, saves the TR-PTS selection
   and, from the same random batches, the GPS selection and the SPT
   allocation -- shared by every method that needs them.  Then one fresh
   process per method measures its peak training memory
   (:func:`training_memory`): a CPU process cannot un-count earlier
   allocations from its peak RSS, and one process per method keeps the
   other models out of the peak on CUDA too.
2. In this process (:func:`measure`), all models with the same random
   weights: FLOPs per inference network; inference forwards and training
   steps (``model.train_step``) timed one by one, interleaved across
   networks and methods (as the token benchmark times its forwards), so
   that drifting machine load hits all methods alike.
"""
import contextlib
import json
import os.path as osp
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from functools import partial
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn as nn

from ..complexity.params import count_parameters
from ..engine import ParameterSelection, gradient_elements
from ..engine.optimizers.masked_update_mixin import optimizer_state_numel
from ..selection.eligibility import MASKED, assign_roles
from .common import (PeakMemory, TimedLoader, describe_device, quiet_logs,
                     random_batches, resolve_device, synchronize,
                     updated_entries)
from .methods import METHODS, RECORDS, Method
from .token_selection import (build_classifier, compress_schedule,
                              copy_weights, flop_report,
                              interleaved_forward_times, interleaved_times,
                              timed_and_warmup_runs, token_schedule)

#: The reference of ``ratios`` and of ``bound_ratios``.
REFERENCE, BOUND = 'full', 'frozen'
#: Measured columns; ``ratios``: ``value / value of full fine-tuning``,
#: ``bound_ratios``: ``value / value of the frozen-weights bound``.
RATIO_KEYS = ('trainable_params', 'gflops', 'images_per_second',
              'step_time_ms', 'train_memory_bytes', 'grad_elements',
              'optimizer_state_elements')
#: Column headers of the two tables of :func:`format_table`.
TIME_COLUMNS = ('method', 'trainable params (% of backbone)', 'params/full',
                'train step (ms)', 'step/full', 'step/bound',
                'train memory', 'mem/full', 'mem/bound')
COMM_COLUMNS = ('method', 'grad elements/step', 'grads/full', 'grads/bound',
                'optim state elements', 'state/full', 'state/bound',
                'GFLOPs', 'images/s', 'img/s/full', 'img/s/bound')
#: Every header (tests look for them).
COLUMNS = TIME_COLUMNS + COMM_COLUMNS[1:]
_MiB = 2**20


class ReportSettings(NamedTuple):
    """What is measured, and how (JSON-serialisable for the children).

    Attributes:
        arch (str | dict): ViT arch name or custom arch dict.
        img_size (int): Input resolution.
        patch_size (int): ViT patch size.
        num_classes (int): Classes of the linear head.
        batch (int): Images per inference forward, training step and
            Fisher batch.
        steps (int): Timed training steps per method after one warm-up.
        runs (int): Forwards per inference network; the first 25% are
            warm-up.
        device (str): ``'cpu'`` or ``'cuda[:i]'`` (resolved).
        amp (bool): fp16 autocast for inference and ``AmpOptimWrapper``
            for training (CUDA only).
        target_ratio (float): TR-PTS budget, trainable / backbone params
            (SPT's allocation gets the same share of the backbone).
        fisher_batches (int): Batches of the Fisher pass (the first one is
            warm-up for its time per sample).
        keep_rate (float): Token keep rate of TR-PTS's keep/fuse blocks.
        keep_layers (tuple): 0-based keep/fuse blocks (fixed), for TR-PTS
            and Sparse-Tuning.
        seed (int): Seed of the weights and the data.
        gps_k (int): GPS's connections per output neuron.
        lora_rank (int): Rank of mmpretrain's LoRA on ``qkv``.
        spt_rank (int): Rank of SPT-LoRA.
        spt_allocation (str, optional): SPT's allocation file (set by
            :func:`efficiency_report` after the selection child).
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
    fisher_batches: int = 4
    keep_rate: float = 0.7
    keep_layers: Tuple[int, ...] = (3, 6, 9)
    seed: int = 0
    gps_k: int = 1
    lora_rank: int = 8
    spt_rank: int = 8
    spt_allocation: Optional[str] = None


def build_methods(settings: ReportSettings) -> Dict[str, Method]:
    """Every registered method, built for ``settings``."""
    return {name: builder(settings._asdict())
            for name, builder in METHODS.items()}


def network_key(method: Method) -> str:
    """Methods with the same key run the same inference network."""
    return json.dumps(dict(backbone=method.backbone, wrap=method.wrap),
                      sort_keys=True)


def build_network(method: Method, settings: ReportSettings) -> nn.Module:
    """The classifier of ``method`` on the device (random weights)."""
    s = settings
    return build_classifier(method.backbone, s.arch, s.img_size,
                            s.patch_size, s.num_classes, s.device, s.seed,
                            wrap=method.wrap)


def build_method(method: Method, settings: ReportSettings,
                 records: Optional[dict] = None,
                 weights_from: Optional[nn.Module] = None
                 ) -> Tuple[nn.Module, object]:
    """The classifier of ``method`` on the device, and its optim wrapper.

    Args:
        method (Method): The method.
        settings (ReportSettings): Model size, device, AMP and seed.
        records (dict, optional): Name -> record of the selection child
            (``method.needs`` must be among them).
        weights_from (nn.Module, optional): Copy its weights before the
            wrapper is built (masked wrappers copy the selected entries
            when armed); added modules keep their own init.

    Returns:
        tuple: The model (eval mode) and the optimizer wrapper (for
        sparse-value methods its ``training_form`` is set).
    """
    records = records or {}
    missing = [n for n in method.needs if n not in records]
    if missing:
        raise ValueError(f'{method.label} needs the records {missing}')
    model = build_network(method, settings)
    if weights_from is not None:
        copy_weights(weights_from, model, new_ok=True)
    with quiet_logs():  # the constructors' INFO lines
        wrapper = method.build_wrapper(model, records, settings.amp)
    return model, wrapper


def describe_form(form, model: nn.Module) -> dict:
    """JSON summary of a :class:`~mmtrpts.engine.TrainingForm`."""
    off = form.switched_off
    return dict(sparse_value_layers=len(form.layers),
                paths=dict(Counter(form.paths.values())),
                switched_off_tensors=len(off),
                switched_off_elements=sum(p.numel() for _, p in off),
                gradient_elements=gradient_elements(model),
                summary=form.summary(model))


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


def _memory_baseline(device: str) -> Tuple[PeakMemory, int]:
    """A fresh worker's memory meter and baseline, imports included.

    The stack is imported first, so that its memory is inside the
    baseline; then gc (+ malloc_trim on CPU) leaves live memory only, as
    after the reset before the measured work.
    """
    import mmengine.optim  # noqa: F401
    import mmpretrain.models  # noqa: F401
    import mmtrpts.engine  # noqa: F401
    memory = PeakMemory(device)
    memory.reset()
    return memory, memory.current()


class _PassLoader(TimedLoader):
    """A :class:`TimedLoader` that also reads the peak memory when the
    pass has consumed its last batch (before the selection rule runs)."""

    def __init__(self, batches, memory: PeakMemory, sync: bool = False):
        super().__init__(batches, sync)
        self.memory = memory
        self.peak: Optional[int] = None

    def __iter__(self):
        yield from super().__iter__()
        self.peak = self.memory.peak()


def _selection_summary(record: dict) -> dict:
    budget, rule = record['budget'], record['settings']
    selected = sum(int(i.numel()) for i in record['indices'].values())
    return dict(rule=rule.get('rule'), k=rule.get('k'),
                realized_ratio=budget['realized_ratio'],
                trainable=budget['trainable'], selected_entries=selected,
                m_percent=rule.get('m_percent'),
                calibration=rule.get('calibration'),
                fisher_samples=record['fisher']['num_samples'])


def _spt_allocation(model: nn.Module, batches, settings: ReportSettings,
                    path: str) -> dict:
    """SPT's sensitivity pass and allocation (as ``compute_sensitivity``:
    the Fisher scores of SPT's scored tensors, eval mode) for a budget of
    ``target_ratio`` of the backbone; the sweep steps by 1/20 of it up to
    8 times it (SPT's ViT-B 0.4M budget: 0.02M steps up to 1.58M)."""
    from ..engine.fisher_pass import compute_fisher_scores
    from ..selection.spt_allocation import allocate_spt, is_scored
    params = {f'backbone.{n}': p
              for n, p in model.backbone.named_parameters() if is_scored(n)}
    scores, stats = compute_fisher_scores(model, batches, params,
                                          progress=False, mode='eval')
    backbone = sum(p.numel() for p in model.backbone.parameters())
    target = max(1, round(settings.target_ratio * backbone))
    cls_token = getattr(model.backbone, 'cls_token', None)
    allocation = allocate_spt(
        {n[len('backbone.'):]: s for n, s in scores.items()}, target=target,
        structured_type='lora', rank=settings.spt_rank,
        tau_step=max(1, target // 20), tau_max=8 * target,
        cls_token=0 if cls_token is None else cls_token.numel())
    allocation['pass'] = dict(stats)
    torch.save(allocation, path)
    counts = allocation['counts']
    return dict(target=target, total=counts['total'],
                structured=counts['structured'],
                structured_matrices=len(allocation['structured']),
                vectors=counts['vectors'],
                unstructured=counts['unstructured'],
                cls_token=counts['cls_token'], tau=counts['tau'],
                fisher_samples=stats['num_samples'])


def select_parameters(settings: dict, paths: Dict[str, str]) -> dict:
    """Fisher pass cost + selections on the dense ViT; save the records.

    Run it in a fresh process.  First the TR-PTS Fisher pass over
    ``fisher_batches`` random batches of ``batch`` images, timed per batch
    (:class:`~.common.TimedLoader`) and with its peak memory read when the
    pass has consumed its last batch (baseline: the memory after the
    imports, as :func:`training_memory`; the high-water mark is reset
    after the model is built), then the TR-PTS rule.  Then, on the same
    model and batches, the GPS rule (its own Fisher pass) and SPT's
    sensitivity pass and allocation, as ``paths`` asks.

    Args:
        settings (dict): :class:`ReportSettings` as a dict.
        paths (dict): Record name (``'trpts'``, ``'gps'``, ``'spt'``) ->
            where to save it; the TR-PTS pass always runs.

    Returns:
        dict: ``fisher`` (the pass's cost) and a summary per record.
    """
    s = ReportSettings(**settings)
    memory, baseline = _memory_baseline(s.device)
    model = build_classifier(dict(type='VisionTransformer'), s.arch,
                             s.img_size, s.patch_size, s.num_classes,
                             s.device, s.seed)
    batches = random_batches(s.fisher_batches, s.batch, s.img_size,
                             s.num_classes, s.seed + 1)
    roles = assign_roles(model)
    loader = _PassLoader(batches, memory,
                         sync=torch.device(s.device).type == 'cuda')
    reset = memory.reset()
    record = ParameterSelection(target_ratio=s.target_ratio,
                                progress=False).run_on_loader(
                                    model, loader, roles)
    seconds = loader.seconds
    timed = seconds[1:] or seconds  # the first batch carries one-off costs
    named = dict(model.named_parameters())
    fisher = dict(
        seconds_per_sample=statistics.median(timed) / s.batch,
        batch_seconds=seconds, timed_batches=len(timed),
        samples=record['fisher']['num_samples'],
        scored_entries=sum(p.numel() for n, p in named.items()
                           if roles[n] == MASKED),
        memory_bytes=loader.peak - baseline, peak_bytes=loader.peak,
        baseline_bytes=baseline, memory_kind=memory.kind, peak_reset=reset)
    result = dict(fisher=fisher, trpts=_selection_summary(record))
    if 'trpts' in paths:
        torch.save(record, paths['trpts'])
    del record
    if 'gps' in paths:
        gps = ParameterSelection(rule='gps', k=s.gps_k,
                                 progress=False).run_on_loader(
                                     model, batches, roles)
        torch.save(gps, paths['gps'])
        result['gps'] = _selection_summary(gps)
    if 'spt' in paths:
        result['spt'] = _spt_allocation(model, batches, s, paths['spt'])
    return result


def _load_records(paths: Dict[str, str]) -> dict:
    return {name: torch.load(path, weights_only=True)
            for name, path in paths.items()}


def training_memory(name: str, settings: dict,
                    record_paths: Optional[Dict[str, str]] = None) -> dict:
    """Peak memory of ``1 + steps`` training steps of one method.

    Run it in a fresh process.  The baseline is the memory after the
    imports (CPU: resident set size; CUDA: allocated bytes); the peak
    high-water mark is reset after the model and wrapper (and training
    form) are built and read after the steps (CPU: peak RSS; CUDA:
    ``max_memory_allocated``).

    Args:
        name (str): The method.
        settings (dict): :class:`ReportSettings` as a dict.
        record_paths (dict, optional): Record name -> file, for the
            records the method needs.

    Returns:
        dict: ``train_memory_bytes`` (peak - baseline), ``peak_bytes``,
        ``baseline_bytes``, ``memory_kind`` and ``peak_reset`` (False if
        the CPU high-water mark could not be reset).
    """
    s = ReportSettings(**settings)
    method = METHODS[name](settings)
    memory, baseline = _memory_baseline(s.device)
    records = _load_records({k: v for k, v in (record_paths or {}).items()
                             if k in method.needs})
    model, wrapper = build_method(method, s, records)
    del records
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
            records: Optional[dict] = None,
            log: Optional[Callable[[str], None]] = None) -> Dict[str, dict]:
    """Parameters, FLOPs, inference and training time in this process.

    Every model gets the weights of the first (full fine-tuning) model.
    Methods with the same backbone config (and wrapper) share one
    inference network, built apart from the training models (a plain
    network: no training form) with the same weights: its FLOPs and
    throughput are measured once and reported for each.

    Args:
        settings (ReportSettings): What to measure.
        methods (dict[str, Method]): The methods, full fine-tuning first.
        records (dict, optional): Name -> record of the selection child.
        log (callable, optional): Progress messages.

    Returns:
        dict: One row per method (see :func:`efficiency_report`), without
        memory and ratios.
    """
    log = log or (lambda message: None)
    s = settings
    models, wrappers, rows = {}, {}, {}
    networks: Dict[str, str] = {}  # network key -> first method
    reference = None  # the full fine-tuning model: its weights for all
    dense_backbone = None
    for name, method in methods.items():
        models[name], wrappers[name] = build_method(method, s, records,
                                                    reference)
        if reference is None:
            reference = models[name]
        counts = count_parameters(models[name])
        if dense_backbone is None:
            dense_backbone = counts['backbone_total']
        trainable = updated_entries(wrappers[name].optimizer)
        form = getattr(wrappers[name], 'training_form', None)
        rows[name] = dict(
            label=method.label, backbone=method.backbone, wrap=method.wrap,
            needs=list(method.needs),
            inference_network=networks.setdefault(network_key(method),
                                                  name),
            total_params=counts['total'],
            backbone_params=counts['backbone_total'],
            trainable_params=trainable,
            trainable_percent_of_backbone=100 * trainable / dense_backbone,
            grad_elements=gradient_elements(models[name]),
            training_form=(None if form is None else
                           describe_form(form, models[name])))
        log(f'built {name}: {trainable:,} trainable parameters, '
            f'{rows[name]["grad_elements"]:,} gradient elements')

    generator = torch.Generator().manual_seed(s.seed)
    inputs = torch.randn(s.batch, 3, s.img_size, s.img_size,
                         generator=generator).to(s.device)
    nets = {}
    for name in networks.values():
        nets[name] = build_network(methods[name], s)
        copy_weights(reference, nets[name], new_ok=True)
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
    del nets
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
                                  sum(step_seconds)),
            optimizer_state_elements=optimizer_state_numel(
                wrappers[name].optimizer))
    return rows


def _ratio(value: float, reference: float) -> float:
    return value / reference if reference else float('nan')


def fisher_ratios(fisher: dict, methods: Dict[str, dict],
                  batch: int) -> Dict[str, dict]:
    """The Fisher pass against the TR-PTS training steps.

    Returns:
        dict: Per TR-PTS row present (``'trpts'``, ``'trpts_masked'``):
        ``time_per_sample`` (Fisher seconds per sample / step seconds per
        sample) and ``memory`` (Fisher peak / training peak).
    """
    ratios = {}
    for name in ('trpts', 'trpts_masked'):
        if name in methods:
            row = methods[name]
            ratios[name] = dict(
                time_per_sample=_ratio(fisher['seconds_per_sample'],
                                       row['step_time_ms'] / 1e3 / batch),
                memory=_ratio(fisher['memory_bytes'],
                              row['train_memory_bytes']))
    return ratios


def target_checks(methods: Dict[str, dict]) -> List[dict]:
    """The issue's targets, as checks (printed, never asserted).

    Returns:
        list: ``target`` (text), ``measured`` and ``limit`` (ratios) and
        ``met`` (``measured <= limit``) of each check whose rows exist.
    """
    checks = []

    def check(target: str, measured: float, limit: float) -> None:
        checks.append(dict(target=target, measured=measured, limit=limit,
                           met=bool(measured <= limit)))

    trpts, lora = methods.get('trpts'), methods.get('lora')
    tokens = methods.get('trpts_tokens')
    if trpts is not None:
        check('TR-PTS sparse-value step <= 1.10 x the frozen-weights bound',
              trpts['bound_ratios']['step_time_ms'], 1.10)
        if lora is not None:
            check('TR-PTS sparse-value step <= the LoRA step',
                  _ratio(trpts['step_time_ms'], lora['step_time_ms']), 1.0)
        check('TR-PTS sparse-value communicated gradient elements <= 1.5 x '
              'its trainable count',
              _ratio(trpts['grad_elements'], trpts['trainable_params']), 1.5)
        if lora is not None:
            check("TR-PTS sparse-value peak training memory <= LoRA's",
                  _ratio(trpts['train_memory_bytes'],
                         lora['train_memory_bytes']), 1.0)
    if tokens is not None:
        check('TR-PTS sparse-value + tokens step <= 0.8 x the frozen-weights '
              'bound', tokens['bound_ratios']['step_time_ms'], 0.8)
    return checks


def efficiency_report(settings: ReportSettings,
                      log: Optional[Callable[[str], None]] = None) -> dict:
    """Measure every registered method in one run (see the module doc).

    Args:
        settings (ReportSettings): What to measure; ``device`` may be
            ``'auto'``.
        log (callable, optional): Progress messages (e.g. to stderr).

    Returns:
        dict: ``settings``, ``device_name``, ``torch``, ``threads``,
        ``selection`` (per record its summary: ``trpts``, ``gps``,
        ``spt``), ``fisher`` (the Fisher pass's cost and
        ``ratios`` to the TR-PTS steps), ``targets`` (see
        :func:`target_checks`) and ``methods``: per method its row with
        the :data:`RATIO_KEYS` values, ``ratios`` (``value / full
        value``), ``bound_ratios`` (``value / frozen-bound value``) and the
        raw measurements.
    """
    log = log or (lambda message: None)
    s = settings._replace(device=resolve_device(settings.device),
                          keep_layers=tuple(settings.keep_layers),
                          spt_allocation=None)
    if s.amp and torch.device(s.device).type != 'cuda':
        raise ValueError('AMP needs CUDA (AmpOptimWrapper refuses CPU)')
    methods = build_methods(s)
    if next(iter(methods)) != REFERENCE:
        raise ValueError(f'the first method must be {REFERENCE!r} (the '
                         'reference)')
    if BOUND not in methods:
        raise ValueError(f'the method {BOUND!r} (the frozen-weights bound) '
                         'must be registered')
    needs = [n for n in RECORDS if any(n in m.needs
                                       for m in methods.values())]
    memory = {}
    with tempfile.TemporaryDirectory() as workdir:
        paths = {n: osp.join(workdir, f'{n}.pth') for n in needs}
        log('Fisher pass cost and selections: '
            f'{", ".join(["trpts"] + [n for n in needs if n != "trpts"])} '
            '(child process) ...')
        selection = in_fresh_process(
            'select_parameters', osp.join(workdir, 'select.json'),
            settings=s._asdict(), paths=paths)
        fisher = selection.pop('fisher')
        if 'spt' in paths:
            s = s._replace(spt_allocation=paths['spt'])
            methods = build_methods(s)
        for name, method in methods.items():
            log(f'peak training memory of {name} (fresh process) ...')
            memory[name] = in_fresh_process(
                'training_memory', osp.join(workdir, f'{name}.json'),
                name=name, settings=s._asdict(),
                record_paths={n: paths[n] for n in method.needs})
        records = _load_records(paths)
        rows = measure(s, methods, records, log)
    for name, row in rows.items():
        row.update(memory[name])
    full, bound = rows[REFERENCE], rows[BOUND]
    for row in rows.values():
        row['ratios'] = {k: _ratio(row[k], full[k]) for k in RATIO_KEYS}
        row['bound_ratios'] = {k: _ratio(row[k], bound[k])
                               for k in RATIO_KEYS}
    fisher['ratios'] = fisher_ratios(fisher, rows, s.batch)
    return dict(settings=s._replace(spt_allocation=None)._asdict(),
                device_name=describe_device(s.device),
                torch=torch.__version__, threads=torch.get_num_threads(),
                selection=selection, fisher=fisher,
                targets=target_checks(rows), methods=rows)


# -- report -------------------------------------------------------------------
def _bytes(num: float) -> str:
    if abs(num) >= 2**30:
        return f'{num / 2**30:.2f} GiB'
    return f'{num / _MiB:.1f} MiB'


def _table(columns: Tuple[str, ...], rows: List[Tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows + [columns])
              for i in range(len(columns))]
    fmt = ' | '.join(['{:<%d}' % widths[0]] +
                     ['{:>%d}' % w for w in widths[1:]])
    lines = [fmt.format(*columns), '-+-'.join('-' * w for w in widths)]
    lines += [fmt.format(*r) for r in rows]
    return '\n'.join(lines)


def format_table(report: dict) -> str:
    """Two fixed-width tables of :func:`efficiency_report`'s rows.

    1. :data:`TIME_COLUMNS`: trainable params (% of the dense backbone),
       median training step, peak training memory, with their ratios to
       full fine-tuning and (step, memory) to the frozen-weights bound;
    2. :data:`COMM_COLUMNS`: gradient elements per step, optimizer state
       elements, backbone GFLOPs per image and inference images/s, with
       their ratios (GFLOPs: absolute only).
    """
    time_rows, comm_rows = [], []
    for res in report['methods'].values():
        ratios, bound = res['ratios'], res['bound_ratios']
        time_rows.append((
            res['label'],
            f'{res["trainable_params"]:,} '
            f'({res["trainable_percent_of_backbone"]:.3f}%)',
            f'{ratios["trainable_params"]:.5f}',
            f'{res["step_time_ms"]:.1f}', f'{ratios["step_time_ms"]:.3f}',
            f'{bound["step_time_ms"]:.3f}',
            _bytes(res['train_memory_bytes']),
            f'{ratios["train_memory_bytes"]:.3f}',
            f'{bound["train_memory_bytes"]:.3f}'))
        comm_rows.append((
            res['label'], f'{res["grad_elements"]:,}',
            f'{ratios["grad_elements"]:.5f}',
            f'{bound["grad_elements"]:.3f}',
            f'{res["optimizer_state_elements"]:,}',
            f'{ratios["optimizer_state_elements"]:.5f}',
            f'{bound["optimizer_state_elements"]:.3f}',
            f'{res["gflops"]:.3f}', f'{res["images_per_second"]:.2f}',
            f'{ratios["images_per_second"]:.3f}',
            f'{bound["images_per_second"]:.3f}'))
    return '\n'.join(['Training time and memory:',
                      _table(TIME_COLUMNS, time_rows), '',
                      'Communication, optimizer state and inference:',
                      _table(COMM_COLUMNS, comm_rows)])


def format_targets(report: dict) -> List[str]:
    """The target checks, one line each (measured value, met or not)."""
    lines = ['Targets of the issue (checked here, never asserted):']
    for check in report['targets']:
        lines.append(f'- {check["target"]}: measured '
                     f'{check["measured"]:.3f}x (limit {check["limit"]:.2f}'
                     f'x) -> {"met" if check["met"] else "NOT met"}')
    if not report['targets']:
        lines.append('- none: the rows they compare are not registered')
    return lines


def format_fisher(report: dict) -> List[str]:
    """The Fisher pass's cost against the TR-PTS training steps."""
    fisher, s = report['fisher'], report['settings']
    lines = [
        f'Fisher pass (TR-PTS, dense ViT, eval mode, batch {s["batch"]}, '
        f'fresh process): {1e3 * fisher["seconds_per_sample"]:.2f} ms per '
        f'sample (median of {fisher["timed_batches"]} timed batch(es) of '
        f'{len(fisher["batch_seconds"])}), peak memory '
        f'{_bytes(fisher["memory_bytes"])} ({fisher["scored_entries"]:,} '
        'scored entries)'
    ]
    labels = {n: r['label'] for n, r in report['methods'].items()}
    for name, ratio in fisher['ratios'].items():
        lines.append(f'- vs the {labels[name]} training step: time per '
                     f'sample {ratio["time_per_sample"]:.3f}x, peak memory '
                     f'{ratio["memory"]:.3f}x')
    return lines


def _arch_name(settings: dict) -> str:
    arch = settings['arch']
    name = (f'ViT-{arch}' if isinstance(arch, str) else
            'ViT(embed_dims={embed_dims}, depth={num_layers}, '
            'heads={num_heads})'.format(**arch))
    return f'{name}/{settings["patch_size"]}, {settings["img_size"]} px'


def _setup_lines(report: dict) -> List[str]:
    s, methods = report['settings'], report['methods']
    full = methods[REFERENCE]
    lines = [
        f'model: {_arch_name(s)}, {s["num_classes"]} classes, '
        f'{full["total_params"]:,} params ({full["backbone_params"]:,} '
        f'backbone), random weights shared by all methods; AdamW lr 1e-3 '
        f'wd 0.05; batch {s["batch"]} (inference, training and Fisher '
        f'pass); {"fp16 autocast (AMP)" if s["amp"] else "fp32"}'
    ]
    selection = report['selection']
    sel = selection.get('trpts')
    if sel:
        fixed = sel['trainable'] - sel['selected_entries']
        lines.append(
            f'TR-PTS selection: target {100 * s["target_ratio"]:.3f}% of '
            f'the backbone -> realised {100 * sel["realized_ratio"]:.3f}% '
            f'({sel["selected_entries"]:,} selected entries of the masked '
            f'matrices + {fixed:,} in biases and head; calibration '
            f'{sel["calibration"]}, M={sel["m_percent"]:.4g}%); Fisher pass '
            f'over {sel["fisher_samples"]} random images on the dense ViT, '
            'shared by the TR-PTS rows')
    gps = selection.get('gps')
    if gps:
        lines.append(
            f'GPS rule: K={gps["k"]} entries per output neuron of every '
            f'masked matrix on the same Fisher scores -> '
            f'{gps["selected_entries"]:,} selected entries, '
            f'{100 * gps["realized_ratio"]:.3f}% of the backbone with '
            'biases and head')
    spt = selection.get('spt')
    if spt:
        lines.append(
            f'SPT-LoRA allocation: budget {spt["target"]:,} (the TR-PTS '
            f'share of the backbone) -> {spt["total"]:,} = structured '
            f'{spt["structured"]:,} ({spt["structured_matrices"]} LoRA '
            f'units of rank {s["spt_rank"]}) + vectors {spt["vectors"]:,} + '
            f'unstructured {spt["unstructured"]:,} + cls_token '
            f'{spt["cls_token"]:,}; sensitivity pass over the same '
            f'{spt["fisher_samples"]} images')
    reduced = [r for r in methods.values()
               if r['tokens_final'] < full['tokens_final']]
    if reduced:
        lines.append(
            f'token keep/fuse at 0-based blocks {list(s["keep_layers"])}, '
            f'FIXED here: TR-PTS puts them in the parameter-sparsest blocks '
            f"of the task's selection, which depend on the data (TR-PTS: "
            f'rho={s["keep_rate"]}, floor, normalised fusion; '
            'Sparse-Tuning: rho=0.7, ceil, unnormalised fusion); tokens ' +
            '; '.join(f'{r["label"]}: {r["token_schedule"]}'
                      for r in reduced))
    return lines


def _flops_note(methods: Dict[str, dict]) -> str:
    dense = methods[REFERENCE]['unsupported_ops']
    added = []
    for name, res in methods.items():
        if res['inference_network'] != name:
            continue  # one entry per network
        extra = {op: calls - dense.get(op, 0)
                 for op, calls in res['unsupported_ops'].items()
                 if calls > dense.get(op, 0)}
        if extra:
            added.append(f'{res["label"]}: ' + ', '.join(
                f'{op} (+{n})' for op, n in sorted(extra.items())))
    return (f'FLOPs: mmengine counter (1 multiply-add = 1 FLOP) + SDPA '
            f'handle, per image, backbone, of the inference network as '
            f'built; uncounted in every network: '
            f'{", ".join(sorted(dense)) or "none"}; uncounted calls added '
            f'(elementwise, sorting: keep/fuse scores, LoRA scaling, RLRR '
            f'rescaling, adapters): {"; ".join(added) or "none"}')


def _notes(report: dict) -> List[str]:
    s, methods = report['settings'], report['methods']
    full = methods[REFERENCE]
    runs, warmup = s['runs'], full['warmup_runs']
    shared = {}
    for res in methods.values():
        shared.setdefault(res['inference_network'], []).append(res['label'])
    groups = '; '.join(', '.join(labels) for labels in shared.values()
                       if len(labels) > 1)
    if full['memory_kind'].startswith('cuda'):
        memory = ('torch.cuda.max_memory_allocated, peak reset after the '
                  'model, wrapper and training form are built, minus the '
                  'bytes allocated before building')
    else:
        resets = all(r['peak_reset'] for r in methods.values())
        memory = ('peak RSS (getrusage ru_maxrss) minus the RSS after the '
                  'imports (both after gc and malloc_trim); the high-water '
                  'mark is reset after the model, wrapper and training form '
                  'are built' +
                  ('' if resets else ' -- reset FAILED for some methods: '
                   'their peaks include building'))
    notes = [
        'trainable params = entries the optimizer updates (full: all; '
        'linear probing: the head; frozen-weights bound: backbone biases + '
        'head; LoRA / RLRR / Sparse-Tuning: their modules + head; TR-PTS / '
        'GPS: the selected entries + biases + head, as the armed masked '
        'wrapper reports; SPT: LoRA units + vectors + unstructured entries '
        '+ cls_token + head); % of the dense ViT backbone, head in the '
        'numerator (so full fine-tuning is above 100%)',
        'grad elements/step = numel of the parameters with requires_grad '
        'once the wrapper and training form are built: what DDP all-reduces '
        'every step.  TR-PTS masked (and SPT, whose partially trained '
        'matrices stay on the masked path) compute and communicate dense '
        'weight gradients; the sparse-value form (TR-PTS, GPS) '
        'communicates only the selected values, biases and head',
        'optim state elements = elements of the non-scalar optimizer state '
        "tensors (AdamW's exp_avg and exp_avg_sq) after the timed steps",
        'frozen-weights bound (BitFit-style): every weight matrix, norm '
        'scale, token and position frozen; the backbone biases (LayerNorm '
        'biases included) and the head trained: the '
        'backward runs through every block (input gradients) without any '
        'weight gradient -- what a method that trains weight entries '
        'cannot beat; bound = value / value of this row',
        _flops_note(methods),
        f'images/s: the whole classifier, model(x, mode="tensor"), eval + '
        f'torch.no_grad(), one fixed batch; {runs} forwards per inference '
        f'network ({warmup} warm-up), each timed on its own (CUDA '
        f'synchronised), interleaved across networks in rotated order; '
        f'images/s = batch / median forward time; the networks are built '
        f'apart from the training models (no training form) and, for '
        f'LoRA, SPT-LoRA and RLRR, not merged (all three can be merged '
        f'into the dense ViT after training); rows with the same backbone '
        f'share one network and its measurement'
        f'{" (" + groups + ")" if groups else ""}',
        f'train step: model.train_step (preprocessing, forward, loss, '
        f'backward, optimizer step, zero_grad) on one fixed batch; 1 '
        f'warm-up + {s["steps"]} timed steps per method, each timed on its '
        f'own, interleaved across methods in rotated order; median',
        f'train memory: one fresh process per method, 1 + {s["steps"]} '
        f'training steps; {memory}',
        'Fisher pass: its own fresh process (the selection child), memory '
        'as the training memory (peak read when the pass has consumed its '
        'last batch, before the selection rule)',
        'ratios = value / value of full fine-tuning (/full) or of the '
        'frozen-weights bound (/bound), exactly as in the JSON (images/s: '
        'above 1 is faster; the others: below 1 is cheaper); printed, '
        'nothing is asserted',
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
    """The printed report: set-up lines, the tables, the Fisher pass, the
    target checks and notes.

    Args:
        report (dict): :func:`efficiency_report`'s result with ``command``,
            ``wall_seconds`` and ``load_average_before``/``_after`` (None
            where unavailable) added.
    """
    import mmengine
    import mmpretrain
    lines = [
        'Efficiency of the implemented methods vs full fine-tuning and the '
        'frozen-weights bound',
        f'command: {report["command"]}',
        f'device: {report["device_name"]}',
        f'torch {report["torch"]}, mmpretrain {mmpretrain.__version__}, '
        f'mmengine {mmengine.__version__}; {report["threads"]} torch '
        f'threads; load average (1/5/15 min) before '
        f'{report["load_average_before"]}, after '
        f'{report["load_average_after"]}',
        *_setup_lines(report), '',
        format_table(report), '',
        *format_fisher(report), '',
        *format_targets(report), ''
    ]
    lines += [f'* {n}' for n in _notes(report)]
    lines.append(f'* wall time {report["wall_seconds"]:.1f} s (child '
                 'processes included)')
    return '\n'.join(lines)
