"""Inference cost of [CLS]-attention token keep/fuse against a dense ViT.

Each setting (a plain MMPretrain ``VisionTransformer`` or a
``TokenKeepFuseViT``) is built with the *same* random weights, its FLOPs
are counted with :func:`mmtrpts.complexity.flops.count_flops` (attention
matmuls included) and its inference time is measured with
:func:`interleaved_forward_times`, all in one process: every iteration
times one forward of every setting (order rotated per iteration), and the
speed-up is the median over iterations of the ratio to the dense forward
*of the same iteration*, so that drifting machine load hits all settings
alike.

Throughput protocol (the one ToMe, Bolya et al. ICLR 2023, describes; re-
implemented here): the model in eval mode under ``torch.no_grad()``, one
fixed random batch, ``runs`` forwards of which the first
``warmup_fraction`` (25%) are discarded as warm-up, CUDA synchronised
around each timed forward, images/s = batch / median forward time.  The
*whole* classifier is timed (``model(x, mode='tensor')``: backbone, neck and
head) -- the head of a ViT-B is 0.77 MFLOPs, i.e. nothing next to the backbone.

FLOPs are per image, of the backbone (as mmpretrain's ``get_flops.py``);
the whole-model count is kept as well.  mmengine's counter has no handle
for the elementwise/sorting ops that the keep/fuse step adds (softmax,
mean, mul, sum, argsort, sort) and treats gather/cat/slicing as zero-FLOP
(its ignore list); :func:`flop_report` lists the unsupported ones.  They
are O(B * H * N) per selection block, i.e. negligible.
"""
import os
import statistics
import time
import warnings
from functools import partial
from typing import (Callable, Dict, List, NamedTuple, Optional, Sequence,
                    Tuple)

import torch
import torch.nn as nn

from .common import (describe_device, quiet_logs, resolve_device,
                     synchronize)

#: Column headers of :func:`format_table` (tests look for them).
COLUMNS = ('setting', 'tokens at the end', 'GFLOPs', 'GFLOPs / dense',
           'images/s [min-max]', 'speed-up vs dense [IQR]', 'target')


class Setting(NamedTuple):
    """One model of the comparison.

    Attributes:
        name (str): Key in the results (``'dense'`` is the reference).
        label (str): Row label of the table.
        backbone (dict): Backbone type and keep/fuse arguments, merged into
            the common ``arch``/``img_size``/``patch_size``.
        min_speedup (float, optional): Target speed-up vs dense (printed,
            never asserted).
        flops_ratio (float, optional): Target FLOPs / dense (printed,
            ``about``: within 0.01).
    """
    name: str
    label: str
    backbone: dict
    min_speedup: Optional[float] = None
    flops_ratio: Optional[float] = None


def default_settings(keep_layers: Sequence[int] = (3, 6, 9)
                     ) -> List[Setting]:
    """The five settings of the issue.

    1. ``dense``: mmpretrain's ``VisionTransformer`` (the reference).
    2. ``no_selection``: ``TokenKeepFuseViT`` without selection blocks
       (target: overhead <= 3%, speed-up >= 0.97).
    3. ``rho0.7_ceil``: rho = 0.7 at ``keep_layers`` with ceil rounding and
       EViT's unnormalised fusion -- the Sparse-Tuning / EViT setting,
       197 -> 140 -> 100 -> 72 tokens for ViT-B/16 at 224 px (targets:
       FLOPs about 0.66 of dense, speed-up >= 1.35).
    4. ``rho0.7_floor``: rho = 0.7, floor rounding (TR-PTS's rule,
       normalised fusion).
    5. ``rho0.95_floor``: rho = 0.95, floor rounding (TR-PTS's default
       rate at three blocks).

    Args:
        keep_layers (Sequence[int]): 0-based selection blocks.

    Returns:
        list[Setting]: The settings, dense first.
    """
    layers = tuple(int(i) for i in keep_layers)
    where = ','.join(str(i) for i in layers)

    def keep(rate: float, rounding: str, fuse: str) -> dict:
        return dict(type='TokenKeepFuseViT', keep_rate=rate,
                    keep_layers=layers, keep_round=rounding, fuse=fuse)

    return [
        Setting('dense', 'dense ViT (mmpretrain)',
                dict(type='VisionTransformer')),
        Setting('no_selection', 'TokenKeepFuseViT, no selection',
                dict(type='TokenKeepFuseViT', keep_layers=()),
                min_speedup=0.97),
        Setting('rho0.7_ceil', f'rho=0.7 @{where} ceil, fuse=sum',
                keep(0.7, 'ceil', 'sum'), min_speedup=1.35,
                flops_ratio=0.66),
        Setting('rho0.7_floor', f'rho=0.7 @{where} floor, fuse=norm',
                keep(0.7, 'floor', 'norm')),
        Setting('rho0.95_floor', f'rho=0.95 @{where} floor, fuse=norm',
                keep(0.95, 'floor', 'norm')),
    ]


# -- models -------------------------------------------------------------------
def build_classifier(backbone: dict, arch='b', img_size: int = 224,
                     patch_size: int = 16, num_classes: int = 1000,
                     device: str = 'cpu', seed: int = 0,
                     wrap: Optional[dict] = None) -> nn.Module:
    """An ``ImageClassifier`` with ``backbone``, randomly initialised.

    Args:
        backbone (dict): ``type`` and extra backbone arguments.
        arch (str | dict): ViT arch name or custom arch dict.
        img_size (int): Input resolution.
        patch_size (int): ViT patch size.
        num_classes (int): Classes of the linear head.
        device (str): Where to put the model.
        seed (int): Seed of the random initialisation.
        wrap (dict, optional): A backbone wrapper config (e.g.
            ``dict(type='LoRAModel', rank=8, targets=[dict(type='qkv')])``)
            that gets the backbone config as its ``module``.

    Returns:
        nn.Module: The classifier, in eval mode.
    """
    import mmtrpts  # noqa: F401  (stack fixes, registers components)
    from mmengine.registry import init_default_scope
    from mmpretrain.models import VisionTransformer
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    dims = (arch['embed_dims'] if isinstance(arch, dict) else
            VisionTransformer.arch_zoo[arch]['embed_dims'])
    backbone_cfg = dict(arch=arch, img_size=img_size, patch_size=patch_size,
                        drop_path_rate=0., **backbone)
    if wrap is not None:
        backbone_cfg = dict(wrap, module=backbone_cfg)
    cfg = dict(type='ImageClassifier', backbone=backbone_cfg,
               head=dict(type='LinearClsHead', num_classes=num_classes,
                         in_channels=dims))
    torch.manual_seed(seed)
    with quiet_logs():  # one INFO message per parameter
        model = MODELS.build(cfg)
        model.init_weights()
    model = model.to(device)
    model.eval()
    return model


#: Module names that wrappers insert between a ViT and its layers
#: (mmpretrain's ``LoRAModel.module``, ``LoRALinear.original_layer``).
WRAPPER_SEGMENTS = ('module', 'original_layer')


def copy_weights(source: nn.Module, target: nn.Module,
                 new_ok: bool = False) -> List[str]:
    """Give ``target`` the weights of ``source`` (a dense classifier).

    Args:
        source (nn.Module): The dense classifier.
        target (nn.Module): A classifier with the same ViT.
        new_ok (bool): ``target`` may hold tensors that ``source`` lacks
            (LoRA / adapter / RLRR / SPT modules: they keep their own
            init); names are matched with the :data:`WRAPPER_SEGMENTS`
            left out.  Every tensor of ``source`` must still find its
            place.  False: only the selection buffer ``keep_layer_mask`` of
            a ``TokenKeepFuseViT`` may be missing; anything else is an
            error.

    Returns:
        list: The tensors of ``target`` that kept their own values.
    """
    if new_ok:
        weights = source.state_dict()
        used, new = set(), []
        tensors = list(target.named_parameters()) + list(
            target.named_buffers())
        with torch.no_grad():
            for name, tensor in tensors:
                key = '.'.join(part for part in name.split('.')
                               if part not in WRAPPER_SEGMENTS)
                if key in weights:
                    tensor.copy_(weights[key])
                    used.add(key)
                else:
                    new.append(name)
        unused = sorted(set(weights) - used)
        if unused:
            raise RuntimeError(f'weights of the source without a place in '
                               f'the target: {unused[:5]}')
        return new
    result = target.load_state_dict(source.state_dict(), strict=False)
    missing = [k for k in result.missing_keys
               if not k.endswith('keep_layer_mask')]
    if missing or result.unexpected_keys:
        raise RuntimeError(f'weights do not match: missing {missing}, '
                           f'unexpected {result.unexpected_keys}')
    return list(result.missing_keys)


def token_schedule(model: nn.Module, inputs: torch.Tensor) -> List[int]:
    """Token counts of one real forward: into block 0, then out of each.

    The counts are read at each block's ``ln1`` (block input) and ``ln2``
    (after the attention residual and any keep/fuse step, i.e. the tokens
    the block's MLP and the next block see); ``TokenKeepFuseViT`` calls
    both norms in selection blocks too, whereas it bypasses the blocks'
    own ``forward`` there.

    Args:
        model (nn.Module): An mmpretrain ViT classifier.
        inputs (Tensor): A batch.

    Returns:
        list[int]: ``depth + 1`` counts; the last is the tokens at the end.
    """
    first: List[int] = []
    counts: List[int] = []

    def recorder(store):
        def hook(module, args):
            store.append(int(args[0].shape[1]))
        return hook

    backbone = model.backbone
    if isinstance(getattr(backbone, 'module', None), nn.Module):
        backbone = backbone.module  # a wrapper such as LoRAModel
    layers = list(backbone.layers)
    handles = [layers[0].ln1.register_forward_pre_hook(recorder(first))]
    handles += [layer.ln2.register_forward_pre_hook(recorder(counts))
                for layer in layers]
    model.eval()
    try:
        with torch.no_grad():
            model(inputs, mode='tensor')
    finally:
        for handle in handles:
            handle.remove()
    if len(first) != 1 or len(counts) != len(layers):
        raise RuntimeError(f'unexpected norm calls: {first}, {counts}')
    return first + counts


def compress_schedule(counts: Sequence[int]) -> str:
    """``[197, 197, 140, 140, 100]`` -> ``'197->140->100'``."""
    steps = [c for i, c in enumerate(counts) if i == 0 or c != counts[i - 1]]
    return '->'.join(str(c) for c in steps)


# -- FLOPs --------------------------------------------------------------------
def unsupported_ops(model: nn.Module, input_shape: Sequence[int],
                    backbone_only: bool = True) -> Dict[str, int]:
    """Ops mmengine's FLOP counter met but has no handle for.

    Same analyzer set-up as :func:`~mmtrpts.complexity.flops.count_flops`
    (incl. the SDPA handle); ops in mmengine's zero-FLOP ignore list
    (gather, cat, slicing, ...) are not reported by mmengine.

    Returns:
        dict: ``{op name: number of calls}``.
    """
    from ..complexity.flops import build_flop_analyzer
    param = next(model.parameters())
    inputs = torch.zeros(1, *input_shape, device=param.device)
    model.eval()
    analyzer = build_flop_analyzer(model, inputs, backbone_only)
    analyzer.total()
    return dict(sorted(analyzer.unsupported_ops().items()))


def flop_report(model: nn.Module,
                input_shape: Sequence[int] = (3, 224, 224)) -> dict:
    """Per-image FLOPs of backbone and whole model, and unsupported ops.

    Returns:
        dict: ``backbone_flops``, ``model_flops`` (ints, multiply-adds,
        attention matmuls included) and ``unsupported_ops`` (backbone).
    """
    from ..complexity.flops import count_flops
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # TracerWarnings of the selection
        backbone = count_flops(model, input_shape, backbone_only=True)
        whole = count_flops(model, input_shape, backbone_only=False)
        ops = unsupported_ops(model, input_shape, backbone_only=True)
    return dict(backbone_flops=backbone, model_flops=whole,
                unsupported_ops=ops)


# -- throughput ---------------------------------------------------------------
def timed_and_warmup_runs(runs: int, warmup_fraction: float = 0.25
                          ) -> Tuple[int, int]:
    """Split ``runs`` into ``(timed, warm-up)``.

    The first ``int(runs * warmup_fraction)`` runs are warm-up; at least
    one run must remain timed.
    """
    warmup = int(runs * warmup_fraction)
    if not 0 <= warmup_fraction < 1 or runs - warmup < 1:
        raise ValueError(f'no timed run: runs={runs}, warmup_fraction='
                         f'{warmup_fraction}')
    return runs - warmup, warmup


def interleaved_times(calls: Dict[str, Callable[[], object]], runs: int,
                      device: str = 'cpu') -> Dict[str, dict]:
    """Time single calls of several functions, interleaved call by call.

    Iteration ``i`` runs every call once, in the order of ``calls`` rotated
    by ``i``, each call timed on its own (CUDA synchronised before and
    after).  Neighbouring calls of different functions are then a fraction
    of a second apart, so a change of machine load hits all of them alike
    -- unlike timing each function for a block of seconds, where load drift
    between blocks shows up as a speed difference (on a shared 2-core VM
    that was a 0.78x "slow-down" of a model whose forward *is* the dense
    one).

    Args:
        calls (dict[str, callable]): Functions without arguments.
        runs (int): Iterations (calls per function).
        device (str): For synchronisation.

    Returns:
        dict: per name, ``seconds`` (wall time of each call, in iteration
        order) and ``cpu_seconds`` (process CPU time of each).
    """
    names = list(calls)
    times = {name: dict(seconds=[], cpu_seconds=[]) for name in names}
    for i in range(runs):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            synchronize(device)
            cpu_start = time.process_time()
            start = time.perf_counter()
            calls[name]()
            synchronize(device)
            times[name]['seconds'].append(time.perf_counter() - start)
            times[name]['cpu_seconds'].append(time.process_time() -
                                              cpu_start)
    return times


def interleaved_forward_times(models: Dict[str, nn.Module],
                              inputs: torch.Tensor, runs: int,
                              device: str = 'cpu') -> Dict[str, dict]:
    """Time single forwards of several models, interleaved forward by forward.

    :func:`interleaved_times` of ``model(inputs, mode='tensor')`` per model,
    under ``torch.no_grad()``.

    Args:
        models (dict[str, nn.Module]): Models on ``device``, eval mode.
        inputs (Tensor): The batch, on ``device``.
        runs (int): Iterations (forwards per model).
        device (str): For synchronisation.

    Returns:
        dict: per model name, ``seconds`` (wall time of each forward, in
        iteration order) and ``cpu_seconds`` (process CPU time of each).
    """
    calls = {name: partial(model, inputs, mode='tensor')
             for name, model in models.items()}
    with torch.no_grad():
        return interleaved_times(calls, runs, device)


# -- comparison ---------------------------------------------------------------
def compare(settings: Sequence[Setting], arch='b', img_size: int = 224,
            patch_size: int = 16, batch: int = 8, runs: int = 40,
            warmup_fraction: float = 0.25, device: str = 'auto',
            num_classes: int = 1000, seed: int = 0, log=None) -> dict:
    """FLOPs and interleaved throughput of ``settings`` in this process.

    All models get the weights of the first setting (the dense reference,
    which must be named ``'dense'``), so the no-selection model must give
    the dense outputs exactly (``max_abs_diff_vs_dense``).  The forwards
    are timed with :func:`interleaved_forward_times`; the first
    ``int(runs * warmup_fraction)`` iterations are warm-up.  Per setting,
    images/s = batch / median forward time, and the speed-up is the median
    over the timed iterations of (dense forward time / this setting's
    forward time) *of the same iteration*, with its interquartile range.

    Args:
        settings (Sequence[Setting]): The models, dense first.
        arch (str | dict): ViT arch.
        img_size (int): Input resolution.
        patch_size (int): ViT patch size.
        batch (int): Images per forward.
        runs (int): Forwards per setting, warm-up included.
        warmup_fraction (float): Discarded fraction of ``runs``.
        device (str): ``'auto'``, ``'cpu'`` or ``'cuda'``.
        num_classes (int): Classes of the head.
        seed (int): Seed of the weights and the batch.
        log (callable, optional): Progress messages (e.g. ``print``).

    Returns:
        dict: ``settings`` (per name: FLOPs, token schedule, forward
        seconds, ``images_per_second`` with its min/max, ``flops_ratio``,
        ``speedup`` with ``speedup_q1``/``speedup_q3``) and the set-up.
    """
    if not settings or settings[0].name != 'dense':
        raise ValueError("the first setting must be the 'dense' reference")
    timed, warmup = timed_and_warmup_runs(runs, warmup_fraction)
    log = log or (lambda message: None)
    device = resolve_device(device)
    input_shape = (3, img_size, img_size)
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(batch, *input_shape, generator=generator)
    inputs = inputs.to(device)

    models: Dict[str, nn.Module] = {}
    results: Dict[str, dict] = {}
    reference_out = None
    for setting in settings:
        model = build_classifier(setting.backbone, arch, img_size,
                                 patch_size, num_classes, device, seed)
        if models:
            copy_weights(models['dense'], model)
        models[setting.name] = model
        with torch.no_grad():
            out = model(inputs, mode='tensor')
        if reference_out is None:
            reference_out = out
        flops = flop_report(model, input_shape)
        counts = token_schedule(model, inputs)
        results[setting.name] = dict(
            label=setting.label, backbone=setting.backbone,
            tokens_per_block=counts, tokens_final=counts[-1],
            token_schedule=compress_schedule(counts),
            max_abs_diff_vs_dense=float(
                (out - reference_out).abs().max()),
            min_speedup_target=setting.min_speedup,
            flops_ratio_target=setting.flops_ratio, **flops)
        log(f'built {setting.name}: {flops["backbone_flops"] / 1e9:.4f} '
            f'GFLOPs, tokens {results[setting.name]["token_schedule"]}')

    log(f'timing {runs} interleaved forwards per setting ...')
    times = interleaved_forward_times(models, inputs, runs, device)
    dense = times['dense']['seconds'][warmup:]
    for name, res in results.items():
        seconds = times[name]['seconds'][warmup:]
        cpu = times[name]['cpu_seconds'][warmup:]
        paired = [d / t for d, t in zip(dense, seconds)]
        q1, _, q3 = statistics.quantiles(paired, n=4, method='inclusive') \
            if len(paired) > 1 else (paired[0],) * 3
        res.update(
            timed_runs=timed, warmup_runs=warmup, forward_seconds=seconds,
            images_per_second=batch / statistics.median(seconds),
            images_per_second_min=batch / max(seconds),
            images_per_second_max=batch / min(seconds),
            cpu_utilisation=sum(cpu) / sum(seconds),
            flops_ratio=(res['backbone_flops'] /
                         results['dense']['backbone_flops']),
            model_flops_ratio=(res['model_flops'] /
                               results['dense']['model_flops']),
            speedup=statistics.median(paired), speedup_q1=q1,
            speedup_q3=q3)
        log(f'{name}: {res["images_per_second"]:.3f} images/s, '
            f'x{res["speedup"]:.3f} vs dense')
    return dict(device=device, device_name=describe_device(device),
                torch=torch.__version__, threads=torch.get_num_threads(),
                arch=arch, img_size=img_size, patch_size=patch_size,
                batch=batch, runs=runs, warmup_fraction=warmup_fraction,
                num_classes=num_classes, seed=seed, settings=results)


# -- report -------------------------------------------------------------------
def _target_text(res: dict) -> str:
    parts = []
    if res['flops_ratio_target'] is not None:
        goal = res['flops_ratio_target']
        met = abs(res['flops_ratio'] - goal) <= 0.01
        parts.append(f'FLOPs ~{goal:.2f}: {"met" if met else "MISSED"}')
    if res['min_speedup_target'] is not None:
        goal = res['min_speedup_target']
        met = res['speedup'] >= goal
        parts.append(f'x>={goal:.2f}: {"met" if met else "MISSED"}')
    return '; '.join(parts) or ('reference' if res['speedup_q1'] ==
                                res['speedup_q3'] == 1 and
                                res['flops_ratio'] == 1 else '-')


def format_table(results: dict) -> str:
    """One fixed-width table of :func:`compare`'s results.

    Columns: setting | tokens at the end (and the schedule) | GFLOPs |
    GFLOPs / dense | images/s of the median forward [slowest-fastest
    forward] | speed-up vs dense (median [interquartile range] of the
    per-iteration ratios) | target
    (printed only; ``met``/``MISSED`` is informative, nothing is
    asserted).
    """
    rows = []
    for name, res in results['settings'].items():
        rows.append((
            res['label'],
            f'{res["tokens_final"]} ({res["token_schedule"]})',
            f'{res["backbone_flops"] / 1e9:.3f}',
            f'{res["flops_ratio"]:.4f}',
            f'{res["images_per_second"]:.3f} '
            f'[{res["images_per_second_min"]:.3f}-'
            f'{res["images_per_second_max"]:.3f}]',
            f'{res["speedup"]:.3f} [{res["speedup_q1"]:.3f}-'
            f'{res["speedup_q3"]:.3f}]',
            _target_text(res)))
    widths = [max(len(r[i]) for r in rows + [COLUMNS])
              for i in range(len(COLUMNS))]
    fmt = ' | '.join(['{:<%d}' % widths[0], '{:<%d}' % widths[1]] +
                     ['{:>%d}' % w for w in widths[2:-1]] +
                     ['{:<%d}' % widths[-1]])
    lines = [fmt.format(*COLUMNS), '-+-'.join('-' * w for w in widths)]
    lines += [fmt.format(*r) for r in rows]
    return '\n'.join(line.rstrip() for line in lines)


def unsupported_note(results: dict) -> str:
    """Which ops the FLOP counter skipped, dense vs the selecting models."""
    dense = results['settings']['dense']['unsupported_ops']
    extra: Dict[str, int] = {}
    for res in results['settings'].values():
        for op, calls in res['unsupported_ops'].items():
            more = calls - dense.get(op, 0)
            if more > 0:
                extra[op] = max(extra.get(op, 0), more)
    base = ', '.join(sorted(dense)) or 'none'
    added = ', '.join(f'{op} (+{n})' for op, n in sorted(extra.items()))
    return (f'FLOPs: mmengine counter (1 multiply-add = 1 FLOP) + SDPA '
            f'handle, per image, backbone; uncounted in every model: '
            f'{base}; uncounted calls added by keep/fuse (most per model): '
            f'{added or "none"} -- softmax/mean of the [CLS] row, '
            f'argsort/sort, the fused weighted sum: O(H*N + N*C) '
            f'elementwise per selection block and image, negligible; '
            f'gather/cat are zero-FLOP in mmengine\'s ignore list; the '
            f'extra [CLS]-row q.K^T (aten::matmul) IS counted')


def load_average() -> Optional[List[float]]:
    """``os.getloadavg()`` (1, 5, 15 min), or None where unavailable."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None
