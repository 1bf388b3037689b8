"""The end-to-end demo on the embedded default (``make demo``) and its
ablation (``tools/demo.py --ablation``).

1. write the generated mini-benchmark (VTAB-1k layout) unless cached;
2. pre-train the tiny ViT on the generated source task unless cached (in
   this process, before any run starts);
3. for every method config and task: train with the stock MMEngine runner
   (train800val200), test on the test split (SPT: its sensitivity pass
   first, which writes the allocation its backbone is built from);
4. print and save one table: top-1 per task, trainable parameters, GFLOPs.

The (method, task) runs go to a pool of worker processes (``spawn``), one
torch thread each (two threads per run on a shared 2-core machine stall as
soon as anything else runs).  Every run is seeded by its config and runs
single-threaded wherever it runs, so the results do not depend on the
number of workers or on the order in which runs finish; the table keeps
the order of the methods and tasks requested.  Everything a run prints --
MMEngine's INFO log, Python warnings, progress bars -- goes to its own
``<work_root>/<method>/<task>/run.log`` (file-descriptor level); the
console gets one line per finished run.  A failed run is reported with
its log and the other runs' rows are still written, then
:class:`DemoFailure` is raised.  ``quiet=False`` (``tools/demo.py
--verbose``) runs everything in this process, one run at a time, with the
runners' output on the console.

A finished run leaves its row in ``<run work dir>/result.json`` under a key
of its resolved config, its task's data files, the pre-trained checkpoint,
the package's source files and the stack's versions; an identical later
request (e.g. the ablation's linear-probing and TR-PTS rows after a
default demo) reuses that row instead of training again (``rerun=True``,
``tools/demo.py --rerun``, forces new runs).
"""
import functools
import glob
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import os.path as osp
import sys
import time
import traceback
import warnings
from collections import OrderedDict
from concurrent.futures import (FIRST_COMPLETED, Future, ProcessPoolExecutor,
                                wait)
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import (Any, Callable, Dict, Iterator, List, Optional, Sequence,
                    Tuple)

import torch
from mmengine.config import Config
from mmengine.logging import MMLogger, print_log
from mmengine.runner import Runner

from ..complexity import count_flops, count_parameters
from ..datasets.synthetic.mini_vtab import load_object_masks, write_benchmark
from ..efficiency.common import quiet_logs
from ..visualization.token_selection import FusedObjectShare
from .embedded_backbone import pretrain_backbone
from .run_config import apply_train_flags
from .sensitivity import compute_sensitivity
from .task_config import set_task
from .token_inspection import (draw_tokens_with_faithfulness, inspect_tokens,
                               token_faithfulness)

#: Each run's console output, inside its work dir.
RUN_LOG = 'run.log'
#: Each finished run's row and cache key, inside its work dir.
RESULT_FILE = 'result.json'
#: The ablation's component rows, in the paper's order.
COMPONENTS = ('neither', 'tokens only', 'parameters only', 'both')
#: Their names in the table.
COMPONENT_LABELS = {
    'neither': 'neither (linear probing)',
    'tokens only': 'tokens only',
    'parameters only': 'parameters only (TR-PTS parameters)',
    'both': 'both (full TR-PTS)',
}
#: The placement ablation's token-placement modes.
PLACEMENT_MODES = ('dense', 'random', 'sparse')
#: Work-dir names of the runs only the ablation has.
TOKENS_ONLY_RUN = 'ablation tokens only'
PLACEMENT_RUN = 'ablation placement {}'
#: Backbone settings that the "tokens only" row copies from full TR-PTS.
TOKEN_ARGS = ('type', 'keep_rate', 'keep_round', 'fuse')

_RUN_IDS = itertools.count()

#: MMEngine log lines that say nothing about a run, silenced on the
#: runner's logger (they come from the host stack, not from our configs).
_HOST_STACK_NOISE = (
    # mmengine.hooks.CheckpointHook.before_train calls
    # FileClient.infer_client even when no file_client_args is set (kept
    # "until MMEngine 1.0"); FileClient and its 'disk' back-end then log
    # their own deprecation notices.  Nothing here uses either.
    '"FileClient" will be deprecated in future',
    '"HardDiskBackend" is the alias of "LocalBackend"',
    # mmengine's DefaultOptimWrapperConstructor logs one WARNING per
    # requires_grad=False tensor whenever paramwise_cfg is set (RLRR's
    # weight-decay rule): the frozen tensors are the method's design.
    'is skipped since its requires_grad=False',
)


class _HostStackNoise(logging.Filter):

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(noise in message for noise in _HOST_STACK_NOISE)


class DemoFailure(RuntimeError):
    """Some runs failed; the finished ones were written.

    Attributes:
        table (str): The Markdown table(s) of the finished runs.
        failures (list[dict]): ``run``, ``task``, ``error`` and ``log`` of
            every failed run.
    """

    def __init__(self, table: str, failures: List[Dict]):
        self.table = table
        self.failures = failures
        lines = [
            f'{f["run"]} | {f["task"]}: {f["error"]}' +
            (f' (log: {display_path(f["log"])})' if f.get('log') else '')
            for f in failures
        ]
        super().__init__(f'{len(failures)} run(s) failed:\n' +
                         '\n'.join(lines))


@dataclass
class DemoJob:
    """One run of the demo: a config trained and tested on one task.

    Args:
        run (str): Its name: the table row of the demo, and the folder of
            its work dir (``<work_root>/<run, spaces as '-'>/<task>``).
            Two jobs with the same ``run`` and ``task`` are one run.
        task (str): A generated task.
        config (str): The config file.
        options (dict): Overrides of the config (``--cfg-options`` keys),
            applied before the overrides every run gets.
        after (str, optional): The ``run`` of the same task that this job
            needs first; ``run_jobs``'s ``resolve`` then derives the job
            from that run's row.
    """
    run: str
    task: str
    config: str
    options: Dict[str, Any] = field(default_factory=dict)
    after: Optional[str] = None

    @property
    def key(self) -> Tuple[str, str]:
        return self.run, self.task


# -- one run ---------------------------------------------------------------
def build_run_config(config: str,
                     task: str,
                     num_classes: int,
                     data_root: str,
                     cfg_options: Optional[dict] = None,
                     job_options: Optional[dict] = None) -> Config:
    """A demo run's config, before its work dir is set.

    ``job_options`` are merged first, then ``cfg_options``; the task, the
    train-only schedule (no validation) and one checkpoint at the end
    follow.
    """
    cfg = Config.fromfile(config)
    for options in (job_options, cfg_options):
        if options:
            cfg.merge_from_dict(options)
    set_task(cfg, task, num_classes, data_root=data_root)
    # The table reports the test split once, after training, and only the
    # final checkpoint is kept (saving one costs ~1.3 s on a 2-core CPU).
    apply_train_flags(cfg, no_validate=True)
    cfg.default_hooks.checkpoint.interval = cfg.train_cfg.max_epochs
    return cfg


def run_one(config: str,
            task: str,
            num_classes: int,
            data_root: str,
            work_dir: str,
            cfg_options: Optional[dict] = None,
            quiet: bool = True,
            job_options: Optional[dict] = None,
            log_level: Optional[str] = None) -> Dict:
    """Train and test one (config, task) pair in this process.

    Args:
        config (str): The config file.
        task (str): Generated task.
        num_classes (int): Its class count.
        data_root (str): The generated benchmark.
        work_dir (str): The run's work dir.
        cfg_options (dict, optional): Overrides of every run.
        quiet (bool): Runner logs at WARNING level, no progress bars.
        job_options (dict, optional): Overrides of this run, merged before
            ``cfg_options``.
        log_level (str, optional): The runner's log level when not quiet
            (default: the config's).

    Returns:
        dict: The table row: ``task``, ``top1``, ``trainable``, ``total``,
        ``flops``, ``seconds``, ``threads`` (torch threads of the run) and,
        for token-selection backbones, ``token_blocks``.
    """
    cfg = build_run_config(config, task, num_classes, data_root, cfg_options,
                           job_options)
    cfg.work_dir = work_dir
    cfg.experiment_name = (
        f'{osp.basename(work_dir)}_'
        f'{time.strftime("%Y%m%d_%H%M%S")}_{next(_RUN_IDS)}')
    if quiet:
        cfg.log_level = 'WARNING'
    elif log_level is not None:
        cfg.log_level = log_level
    start = time.time()
    if cfg.model.backbone.type == 'SPTViT':
        # SPT's structure depends on the task: its sensitivity pass writes
        # the allocation that SPTViT reads when the runner builds it.
        compute_sensitivity(
            cfg, out=osp.join(work_dir, 'allocation.pth'), progress=not quiet)
    runner = Runner.from_cfg(cfg)
    runner.logger.addFilter(_HostStackNoise())
    runner.train()
    metrics = runner.test()
    model = runner.model
    params = count_parameters(model)
    # Masked methods keep requires_grad=True on every candidate; the
    # selection hook records how many entries the optimizer really updates.
    trainable = runner.message_hub.runtime_info.get('trainable_params',
                                                    params['trainable'])
    image_size = cfg.model.backbone.get('img_size', 224)
    row = dict(
        task=task,
        top1=float(metrics['accuracy/top1']),
        trainable=trainable,
        total=params['total'],
        flops=count_flops(model, (3, image_size, image_size)),
        seconds=round(time.time() - start, 1),
        threads=torch.get_num_threads())
    blocks = getattr(
        getattr(model, 'module', model).backbone, 'keep_layers', None)
    if blocks is not None:
        row['token_blocks'] = list(blocks)
    return row


def default_workers() -> int:
    """``min(2, usable CPU cores)``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(2, cores))


def _init_worker() -> None:
    """A pool worker: one torch thread, set before any work."""
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # parallel work already ran in this process
        pass
    # A spawned process starts with its start method set to 'spawn';
    # MMEngine's runner then warns that it "force sets" the configs'
    # env_cfg.mp_cfg.mp_start_method ('fork').  The worker starts no
    # process of its own: leave the choice to the runner.
    multiprocessing.set_start_method(None, force=True)


@contextmanager
def _output_to(path: str) -> Iterator[None]:
    """Send this process's stdout and stderr (the file descriptors: Python,
    C and child output alike) to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for descriptor in (fd, *saved):
            os.close(descriptor)


def _failure(spec: dict, error: BaseException, start: float,
             log: Optional[str]) -> Dict:
    return dict(
        task=spec['task'],
        error=f'{type(error).__name__}: {error}'.strip(),
        log=log,
        seconds=round(time.time() - start, 1),
        threads=torch.get_num_threads())


def _not_run(job: 'DemoJob', reason: str) -> Dict:
    return dict(
        task=job.task, error=f'not run: {reason}', log=None, seconds=0.)


def _run_spec(spec: dict, quiet: bool) -> Dict:
    return run_one(
        spec['config'],
        spec['task'],
        spec['num_classes'],
        spec['data_root'],
        spec['work_dir'],
        cfg_options=spec['cfg_options'],
        quiet=quiet,
        job_options=spec['options'],
        log_level='INFO')


def _run_in_worker(spec: dict) -> Dict:
    """A pool worker's job: one run, all of its output in its ``run.log``;
    returns its row, or its error."""
    os.makedirs(spec['work_dir'], exist_ok=True)
    log = osp.join(spec['work_dir'], RUN_LOG)
    start = time.time()
    # catch_warnings also resets the "shown once" registries: a warning
    # that an earlier run of this worker raised shows in this log too.
    with _output_to(log), warnings.catch_warnings():
        # A fresh current logger: what is logged before the runner exists
        # (SPT's sensitivity pass) goes here, not to an earlier run's file.
        MMLogger.get_instance(f'demo_run_{next(_RUN_IDS)}', log_level='INFO')
        try:
            row = _run_spec(spec, quiet=False)
        except Exception as error:  # reported; the other runs go on
            traceback.print_exc()
            return _failure(spec, error, start, log)
    row['log'] = log
    return row


@contextmanager
def single_threaded() -> Iterator[None]:
    """One torch thread inside the block, as in a pool worker."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _run_inline(spec: dict) -> Dict:
    """``--verbose``: one run in this process, its output on the console,
    single-threaded like a pool worker's."""
    start = time.time()
    with single_threaded():
        try:
            return _run_spec(spec, quiet=False)
        except Exception as error:  # reported; the other runs go on
            traceback.print_exc()
            return _failure(spec, error, start, None)


class _InlineExecutor:
    """``submit`` runs the job now, in this process."""

    def submit(self, fn: Callable, *args) -> Future:
        future = Future()
        future.set_result(fn(*args))
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False):
        pass


# -- the results cache -----------------------------------------------------
@functools.lru_cache()
def _code_fingerprint() -> str:
    """The package's source files (sizes, times) and the stack's versions."""
    import mmengine
    import mmpretrain
    digest = hashlib.sha256()
    root = osp.dirname(osp.dirname(osp.abspath(__file__)))
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            if name.endswith('.py'):
                path = osp.join(folder, name)
                stat = os.stat(path)
                digest.update(f'{osp.relpath(path, root)} {stat.st_size} '
                              f'{stat.st_mtime_ns}\n'.encode())
    digest.update(f'{torch.__version__} {mmengine.__version__} '
                  f'{mmpretrain.__version__}'.encode())
    return digest.hexdigest()


def _checkpoints(node: Any) -> Iterator[str]:
    """Every ``checkpoint`` path of a config (``init_cfg`` entries)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == 'checkpoint' and isinstance(value, str):
                yield value
            else:
                yield from _checkpoints(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _checkpoints(value)


def run_key(spec: dict) -> str:
    """The cache key of a run: its resolved config, the files it reads
    (task data, pre-trained checkpoints; sizes and times) and the code."""
    cfg = build_run_config(spec['config'], spec['task'], spec['num_classes'],
                           spec['data_root'], spec['cfg_options'],
                           spec['options'])
    files = sorted(
        glob.glob(osp.join(spec['data_root'], spec['task'], '*.txt')) +
        glob.glob(osp.join(spec['data_root'], spec['task'], '*.json')))
    files += sorted(set(_checkpoints(cfg.to_dict())))
    stats = [(path, os.stat(path).st_size,
              os.stat(path).st_mtime_ns) if osp.isfile(path) else
             (path, None, None) for path in files]
    text = json.dumps(
        dict(
            config=cfg.to_dict(),
            task=spec['task'],
            files=stats,
            code=_code_fingerprint()),
        sort_keys=True,
        default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _cached_row(work_dir: str, key: str) -> Optional[Dict]:
    path = osp.join(work_dir, RESULT_FILE)
    if not osp.isfile(path):
        return None
    try:
        with open(path) as f:
            cached = json.load(f)
    except (OSError, ValueError):
        return None
    return cached['row'] if cached.get('key') == key else None


def _save_row(work_dir: str, key: str, row: Dict) -> None:
    os.makedirs(work_dir, exist_ok=True)
    path = osp.join(work_dir, RESULT_FILE)
    with open(path + '.tmp', 'w') as f:
        json.dump(dict(key=key, row=row), f, indent=1)
    os.replace(path + '.tmp', path)


# -- scheduling ------------------------------------------------------------
def run_dir(work_root: str, run: str, task: str) -> str:
    """``<work_root>/<run with spaces as '-'>/<task>``."""
    return osp.join(work_root, run.replace(' ', '-'), task)


def display_path(path: str) -> str:
    """``path`` relative to the current directory when it lies below it."""
    rel = osp.relpath(path)
    return path if rel.startswith('..') else rel


def _progress_line(index: int, total: int, job: DemoJob, row: Dict,
                   widths: Tuple[int, int]) -> str:
    head = (f'[{index:>{len(str(total))}}/{total}] '
            f'{job.run:<{widths[0]}} | {job.task:<{widths[1]}}')
    seconds = f'{row.get("seconds", 0):.0f} s'
    if 'error' in row:
        line = f'{head}  FAILED ({seconds}): {row["error"]}'
    else:
        cached = 'cached, ' if row.get('cached') else ''
        line = f'{head}  top-1 {row["top1"]:5.1f}  ({cached}{seconds})'
    if row.get('log'):
        line += f'  log: {display_path(row["log"])}'
    return line


def _unique(jobs: Sequence[DemoJob]) -> List[DemoJob]:
    unique: Dict[Tuple[str, str], DemoJob] = OrderedDict()
    for job in jobs:
        if job.key in unique:
            if unique[job.key] != job:
                raise ValueError(f'two different jobs are named {job.key}: '
                                 f'{unique[job.key]} and {job}')
            continue
        unique[job.key] = job
    for job in unique.values():
        if job.after is not None and (job.after, job.task) not in unique:
            raise ValueError(f'{job.key} runs after {(job.after, job.task)},'
                             ' which is not among the jobs')
    return list(unique.values())


def run_jobs(
    jobs: Sequence[DemoJob],
    task_classes: Dict[str, int],
    data_root: str,
    work_root: str,
    cfg_options: Optional[dict] = None,
    workers: Optional[int] = None,
    quiet: bool = True,
    rerun: bool = False,
    resolve: Optional[Callable[[DemoJob, Dict], DemoJob]] = None,
    echo: Callable[[str], None] = functools.partial(print, flush=True)
) -> Dict[Tuple[str, str], Dict]:
    """Run jobs in a pool of single-threaded worker processes.

    Jobs start in the order given (a job with ``after`` once that run has
    finished: ``resolve(job, row_of_after)`` gives the job to run); each
    prints one progress line through ``echo`` as it finishes.  A failed
    run's row holds ``error`` and ``log`` instead of results; a job whose
    ``after`` failed is not run and fails too.

    Args:
        jobs (Sequence[DemoJob]): The runs; duplicates (same ``run`` and
            ``task``) run once.
        task_classes (dict): Task -> class count.
        data_root (str): The generated benchmark.
        work_root (str): Parent of the runs' work dirs.
        cfg_options (dict, optional): Overrides of every run.
        workers (int, optional): Worker processes (default
            :func:`default_workers`).
        quiet (bool): Workers, each run's output in its ``run.log``.
            False: every run in this process, one at a time, output on the
            console.
        rerun (bool): Ignore the rows of earlier identical runs.
        resolve (callable, optional): Needed by jobs with ``after``.
        echo (callable): Where progress lines go.

    Returns:
        dict: ``(run, task)`` -> row, in the order of ``jobs``.
    """
    jobs = _unique(jobs)
    total = len(jobs)
    widths = (max(len(job.run) for job in jobs) if jobs else 0,
              max(len(job.task) for job in jobs) if jobs else 0)
    rows: Dict[Tuple[str, str], Dict] = {}
    pending = list(jobs)
    running: Dict[Future, Tuple[DemoJob, dict]] = {}
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f'workers must be >= 1, got {workers}')
    if quiet:
        executor = ProcessPoolExecutor(
            max_workers=min(workers, max(total, 1)),
            mp_context=multiprocessing.get_context('spawn'),
            initializer=_init_worker)
        target = _run_in_worker
    else:
        executor, target = _InlineExecutor(), _run_inline

    def finish(job: DemoJob, row: Dict) -> None:
        rows[job.key] = row
        echo(_progress_line(len(rows), total, job, row, widths))

    def start(job: DemoJob) -> None:
        if job.after is not None:
            before = rows[(job.after, job.task)]
            if 'error' in before:
                reason = f'it needs the run {job.after!r}, which failed'
                finish(job, _not_run(job, reason))
                return
            if resolve is None:
                raise ValueError(f'{job.key} runs after {job.after!r}: '
                                 'run_jobs needs resolve')
            try:
                job = resolve(job, before)
            except Exception as error:  # e.g. the row lacks what it needs
                finish(job, _not_run(job, f'{type(error).__name__}: {error}'))
                return
        work_dir = run_dir(work_root, job.run, job.task)
        spec = dict(
            config=job.config,
            task=job.task,
            num_classes=task_classes[job.task],
            data_root=data_root,
            work_dir=work_dir,
            options=dict(job.options),
            cfg_options=dict(cfg_options or {}))
        try:
            key = run_key(spec)
        except Exception as error:  # e.g. a config that does not parse
            finish(job, _failure(spec, error, time.time(), None))
            return
        spec['key'] = key
        cached = None if rerun else _cached_row(work_dir, key)
        if cached is not None:
            finish(job, dict(cached, cached=True))
            return
        try:
            running[executor.submit(target, spec)] = job, spec
        except Exception as error:  # a broken pool
            finish(job, _failure(spec, error, time.time(), None))

    def collect(future: Future) -> None:
        job, spec = running.pop(future)
        try:
            row = future.result()
        except Exception as error:  # the worker died
            row = _failure(
                spec, error, time.time(),
                osp.join(spec['work_dir'], RUN_LOG) if quiet else None)
        if 'error' not in row:
            _save_row(spec['work_dir'], spec['key'], row)
        finish(job, row)

    try:
        while pending or running:
            ready = [
                job for job in pending
                if job.after is None or (job.after, job.task) in rows
            ]
            for job in ready:
                pending.remove(job)
                start(job)
            for future in [f for f in running if f.done()]:
                collect(future)
            if running:
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    collect(future)
            elif pending and not ready:
                raise RuntimeError(f'jobs wait for runs that never finish: '
                                   f'{[job.key for job in pending]}')
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    return OrderedDict((job.key, rows[job.key]) for job in jobs)


def _failures(rows: Dict[Tuple[str, str], Dict]) -> List[Dict]:
    return [
        dict(run=run, task=task, error=row['error'], log=row.get('log'))
        for (run, task), row in rows.items() if 'error' in row
    ]


# -- the demo table --------------------------------------------------------
def format_table(results: Dict[str, List[Dict]], tasks: Sequence[str]) -> str:
    """A Markdown table: one row per method, one top-1 column per task.

    A failed run (a row with ``error``) shows ``failed``; the mean then
    shows ``-``, and the parameter and FLOP columns average the method's
    finished runs.
    """
    header = ['method'] + list(tasks) + [
        'mean top-1', 'trainable params', 'trainable %', 'GFLOPs'
    ]
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for method, rows in results.items():
        by_task = {row['task']: row for row in rows if 'error' not in row}
        top1 = [by_task[t]['top1'] for t in tasks if t in by_task]
        cells = [method] + [
            f'{by_task[t]["top1"]:.1f}' if t in by_task else 'failed'
            for t in tasks
        ]
        cells.append(f'{sum(top1) / len(top1):.1f}'
                     if len(top1) == len(tasks) and top1 else '-')
        cells += _cost_cells(list(by_task.values()), absolute=True)
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def _cost_cells(rows: List[Dict], absolute: bool) -> List[str]:
    """Trainable parameters (count and %) and GFLOPs, averaged over the
    rows (``-`` without rows)."""
    if not rows:
        return ['-'] * (3 if absolute else 2)
    trainable = sum(r['trainable'] for r in rows) / len(rows)
    total = sum(r['total'] for r in rows) / len(rows)
    flops = sum(r['flops'] for r in rows) / len(rows)
    cells = [f'{trainable:,.0f}'] if absolute else []
    return cells + [f'{100 * trainable / total:.2f}', f'{flops / 1e9:.4f}']


def _write_results(work_root: str, name: str, data: Any, text: str) -> None:
    os.makedirs(work_root, exist_ok=True)
    with open(osp.join(work_root, f'{name}.json'), 'w') as f:
        json.dump(data, f, indent=1)
    with open(osp.join(work_root, f'{name}.md'), 'w') as f:
        f.write(text + '\n')


def prepare_demo(backbone_config: str,
                 cache_dir: str,
                 tasks: Optional[Sequence[str]] = None,
                 quiet: bool = True) -> Tuple[str, Dict[str, int]]:
    """Write the generated benchmark and pre-train the backbone (cached).

    Args:
        backbone_config (str): Config whose ``model.backbone`` is
            pre-trained on the source task; its ``pretrained`` variable
            says where the checkpoint goes.
        cache_dir (str): Where the generated benchmark is written.
        tasks (Sequence[str], optional): Generated tasks (default: all).
        quiet (bool): No line about the benchmark.

    Returns:
        tuple: The benchmark's root and ``{task: num_classes}``.
    """
    data_root = osp.join(cache_dir, 'mini-vtab')
    task_classes = write_benchmark(
        data_root, **({} if tasks is None else dict(tasks=tasks)))
    if not quiet:
        print_log(
            f'Generated mini-benchmark: {data_root} {task_classes}',
            logger='current')
    backbone_cfg = Config.fromfile(backbone_config)
    pretrain_backbone(backbone_cfg.model.backbone, backbone_cfg.pretrained)
    return data_root, task_classes


def run_methods(methods: Dict[str, str],
                task_classes: Dict[str, int],
                data_root: str,
                work_root: str,
                cfg_options: Optional[dict] = None,
                quiet: bool = True,
                workers: Optional[int] = None,
                rerun: bool = False) -> str:
    """Every method on every task: ``results.{md,json}`` and the table.

    Args:
        methods (dict): Table row name -> config file.
        task_classes (dict): Task -> class count (table columns, in order).
        data_root (str): The generated benchmark.
        work_root (str): Parent of the runs' work dirs and of the results.
        cfg_options (dict, optional): Overrides applied to every run.
        quiet (bool): Runs in worker processes, output in their logs.
        workers (int, optional): Worker processes.
        rerun (bool): Ignore the rows of earlier identical runs.

    Returns:
        str: The Markdown table (``format_table``).

    Raises:
        DemoFailure: after writing the finished runs' rows, when a run
            failed.
    """
    jobs = [
        DemoJob(method, task, config) for method, config in methods.items()
        for task in task_classes
    ]
    rows = run_jobs(
        jobs,
        task_classes,
        data_root,
        work_root,
        cfg_options,
        workers=workers,
        quiet=quiet,
        rerun=rerun)
    results = OrderedDict(
        (method, [rows[(method, task)] for task in task_classes])
        for method in methods)
    table = format_table(results, list(task_classes))
    _write_results(work_root, 'results', results, table)
    failures = _failures(rows)
    if failures:
        raise DemoFailure(table, failures)
    return table


def run_demo(methods: Dict[str, str],
             backbone_config: str,
             cache_dir: str,
             work_root: str,
             tasks: Optional[Sequence[str]] = None,
             cfg_options: Optional[dict] = None,
             quiet: bool = True,
             workers: Optional[int] = None,
             rerun: bool = False) -> str:
    """Run the demo and return the table (also written to ``work_root``).

    ``results.md`` holds the table, ``results.json`` the rows of every
    method (per task: ``top1``, ``trainable``, ``total``, ``flops``,
    ``seconds``, ``threads``, ``log``; a failed run: ``error`` and
    ``log``).

    Args:
        methods (dict): Table row name -> config file.
        backbone_config (str): Config whose ``model.backbone`` is
            pre-trained on the source task; its ``pretrained`` variable
            says where the checkpoint goes.
        cache_dir (str): Where the generated benchmark is written.
        work_root (str): Parent of the runs' work dirs.
        tasks (Sequence[str], optional): Generated tasks (default: all).
        cfg_options (dict, optional): Overrides applied to every run.
        quiet (bool): Runs in single-threaded worker processes, each run's
            output in its ``run.log``, one console line per run.  False:
            runs in this process, one at a time, with the runners' output.
        workers (int, optional): Worker processes (default
            :func:`default_workers`).
        rerun (bool): Ignore the rows of earlier identical runs.

    Raises:
        DemoFailure: after writing the finished runs' rows, when a run
            failed.
    """
    data_root, task_classes = prepare_demo(backbone_config, cache_dir, tasks,
                                           quiet)
    return run_methods(methods, task_classes, data_root, work_root,
                       cfg_options, quiet, workers, rerun)


def run_token_faithfulness(run_work_dir: str,
                           task_dir: str,
                           out_file: Optional[str] = None,
                           num_drawn: int = 4) -> FusedObjectShare:
    """How faithful a finished token-selection run's fusing is.

    Runs every test image of the generated task through the run's final
    checkpoint and scores the patches fused by its last selection block
    against the task's object masks (:func:`mmtrpts.visualization.
    fused_object_share`): uniformly random fusing puts the object's area
    share on the object; an object-centred [CLS] attention much less.

    Args:
        run_work_dir (str): Work dir of a finished run of a
            ``TokenKeepFuseViT`` config (its dumped config and
            ``last_checkpoint``).
        task_dir (str): The task's folder of the generated benchmark (its
            ``test.txt`` and ``masks/test.npy``).
        out_file (str, optional): Also draw the first ``num_drawn`` test
            images with their kept / fused patches and object outlines.
        num_drawn (int): Images drawn into ``out_file``.

    Returns:
        FusedObjectShare: The score over all test images.
    """
    with open(osp.join(run_work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    configs = glob.glob(osp.join(run_work_dir, '*.py'))
    if len(configs) != 1:
        raise FileNotFoundError(
            f'expected exactly one dumped config in {run_work_dir}, found '
            f'{sorted(configs)}')
    with open(osp.join(task_dir, 'test.txt')) as f:
        images = [osp.join(task_dir, line.split()[0]) for line in f
                  if line.strip()]
    masks = load_object_masks(task_dir, 'test')
    with single_threaded(), quiet_logs():
        inspection = inspect_tokens(configs[0], checkpoint, images)
    if out_file is None:
        return token_faithfulness(inspection, masks)
    return draw_tokens_with_faithfulness(
        inspection, masks, out_file, num_images=num_drawn)


# -- the ablation ----------------------------------------------------------
@dataclass
class AblationPlan:
    """The ablation's runs and which run fills which table row.

    Attributes:
        jobs (list[DemoJob]): Every run, in start order.
        components (list[tuple]): ``(row, run)`` of the component table,
            rows in :data:`COMPONENTS` order.
        placements (list[tuple]): ``(mode, run)`` of the placement table.
        tasks (list[str]): The table columns.
    """
    jobs: List[DemoJob]
    components: List[Tuple[str, str]]
    placements: List[Tuple[str, str]]
    tasks: List[str]


def plan_ablation(tasks: Sequence[str],
                  linear_probe: Tuple[str, str],
                  parameters: Tuple[str, str],
                  full: Tuple[str, str],
                  placement_key: str = 'custom_hooks.0.token_placement.mode',
                  full_mode: str = 'sparse') -> AblationPlan:
    """The runs of the component and placement ablations (pure).

    Component rows: *neither* is the linear-probing run, *parameters
    only* the TR-PTS parameter-selection run and *both* the full TR-PTS
    run -- the demo's own runs, under their names, so a finished demo's
    rows are reused.  *Tokens only* is linear probing with the full run's
    token selection at the blocks that the full run chose on the same task
    (a frozen backbone has no selected parameters to place tokens by): it
    runs after that run, and :func:`tokens_only_options` derives it.
    Placement rows: full TR-PTS with ``placement_key`` set to each of
    :data:`PLACEMENT_MODES`; ``full_mode`` (the config's own mode) is the
    full run itself.

    Args:
        tasks (Sequence[str]): Generated tasks.
        linear_probe, parameters, full (tuple): ``(run name, config)`` of
            linear probing, TR-PTS parameters and full TR-PTS.
        placement_key (str): The config key of the placement mode.
        full_mode (str): The full config's placement mode.

    Returns:
        AblationPlan: Full runs first (the tokens-only runs wait for
        them), then the other component and placement runs.
    """
    tasks = list(tasks)
    full_run, full_config = full
    placement_runs = {
        mode: full_run if mode == full_mode else PLACEMENT_RUN.format(mode)
        for mode in PLACEMENT_MODES
    }
    jobs = [DemoJob(full_run, task, full_config) for task in tasks]
    for run, config in (parameters, linear_probe):
        jobs += [DemoJob(run, task, config) for task in tasks]
    for mode, run in placement_runs.items():
        if run != full_run:
            jobs += [
                DemoJob(run, task, full_config, {placement_key: mode})
                for task in tasks
            ]
    jobs += [
        DemoJob(TOKENS_ONLY_RUN, task, linear_probe[1], after=full_run)
        for task in tasks
    ]
    components = list(
        zip(COMPONENTS,
            (linear_probe[0], TOKENS_ONLY_RUN, parameters[0], full_run)))
    return AblationPlan(jobs, components, list(placement_runs.items()), tasks)


def tokens_only_options(token_backbone: Dict, full_row: Dict) -> Dict:
    """Linear probing with the full TR-PTS run's token selection.

    Args:
        token_backbone (dict): The full config's backbone settings of
            :data:`TOKEN_ARGS` (``type``, ``keep_rate``, ...).
        full_row (dict): The full run's row (its ``token_blocks``).

    Returns:
        dict: ``--cfg-options`` for the linear-probing config.
    """
    if 'token_blocks' not in full_row:
        raise KeyError('the full TR-PTS row names no token_blocks: its '
                       'backbone has no token selection')
    options = {
        f'model.backbone.{key}': token_backbone[key]
        for key in TOKEN_ARGS if key in token_backbone
    }
    options['model.backbone.keep_layers'] = list(full_row['token_blocks'])
    return options


def _token_settings(full_config: str) -> Tuple[Dict, str, str]:
    """The full config's token-selection backbone settings, the key of its
    placement mode and the mode."""
    cfg = Config.fromfile(full_config)
    backbone = {
        k: cfg.model.backbone[k]
        for k in TOKEN_ARGS if k in cfg.model.backbone
    }
    for i, hook in enumerate(cfg.get('custom_hooks', [])):
        if hook.get('token_placement'):
            mode = hook.token_placement.get('mode', 'sparse')
            return backbone, f'custom_hooks.{i}.token_placement.mode', mode
    raise ValueError(f'{full_config} has no hook with a token_placement')


def format_ablation_tables(plan: AblationPlan, rows: Dict[Tuple[str, str],
                                                          Dict]) -> str:
    """The two Markdown tables of the ablation, with their titles."""
    tasks = plan.tasks

    def cells(run: str) -> Tuple[List[Dict], List[str], str]:
        runs = [rows.get((run, task), {'error': 'not run'}) for task in tasks]
        done = [r for r in runs if 'error' not in r]
        top1 = [
            f'{r["top1"]:.1f}' if 'error' not in r else 'failed' for r in runs
        ]
        mean = (f'{sum(r["top1"] for r in done) / len(done):.1f}'
                if done and len(done) == len(runs) else '-')
        return runs, top1, mean

    head = ' | '.join(tasks)
    lines = [
        '**Component ablation** (top-1 % on the test split; tokens: token '
        'selection in the blocks that full TR-PTS chose on the task)', '',
        f'| variant | tokens | parameters | {head} | mean top-1 | '
        'trainable % | GFLOPs |', '|' + '---|' * (len(tasks) + 6)
    ]
    for component, run in plan.components:
        runs, top1, mean = cells(run)
        tokens = '✓' if component in ('tokens only', 'both') else ''
        params = '✓' if component in ('parameters only', 'both') else ''
        done = [r for r in runs if 'error' not in r]
        lines.append('| ' +
                     ' | '.join([COMPONENT_LABELS[component], tokens, params] +
                                top1 + [mean] +
                                _cost_cells(done, absolute=False)) + ' |')
    lines += [
        '', '**Token placement** (full TR-PTS; top-1 % and the blocks with '
        'token selection per task)', '',
        f'| placement | {head} | mean top-1 | GFLOPs |',
        '|' + '---|' * (len(tasks) + 3)
    ]
    for mode, run in plan.placements:
        runs, top1, mean = cells(run)
        task_cells = [
            f'{value} {r["token_blocks"]}' if 'token_blocks' in r else value
            for value, r in zip(top1, runs)
        ]
        done = [r for r in runs if 'error' not in r]
        lines.append('| ' + ' | '.join([mode] + task_cells + [mean] +
                                       _cost_cells(done, False)[1:]) + ' |')
    return '\n'.join(lines)


def run_ablation(task_classes: Dict[str, int],
                 data_root: str,
                 work_root: str,
                 linear_probe: Tuple[str, str],
                 parameters: Tuple[str, str],
                 full: Tuple[str, str],
                 cfg_options: Optional[dict] = None,
                 quiet: bool = True,
                 workers: Optional[int] = None,
                 rerun: bool = False) -> str:
    """The component and placement ablations (``ablation.{md,json}``).

    See :func:`plan_ablation` for the runs.  ``ablation.json`` holds
    ``tasks`` and the rows of every ``component`` and ``placement``.

    Args:
        task_classes (dict): Task -> class count (table columns, in order).
        data_root (str): The generated benchmark.
        work_root (str): Parent of the runs' work dirs (the demo's: its
            finished identical runs are reused) and of the results.
        linear_probe, parameters, full (tuple): ``(run name, config)`` of
            linear probing, TR-PTS parameters and full TR-PTS (give the
            demo's row names to share its runs).
        cfg_options (dict, optional): Overrides applied to every run.
        quiet (bool): Runs in worker processes, output in their logs.
        workers (int, optional): Worker processes.
        rerun (bool): Ignore the rows of earlier identical runs.

    Returns:
        str: Both tables, Markdown.

    Raises:
        DemoFailure: after writing what finished, when a run failed.
    """
    token_backbone, placement_key, full_mode = _token_settings(full[1])
    plan = plan_ablation(
        list(task_classes), linear_probe, parameters, full, placement_key,
        full_mode)

    def resolve(job: DemoJob, full_row: Dict) -> DemoJob:
        return DemoJob(job.run, job.task, job.config,
                       tokens_only_options(token_backbone, full_row))

    rows = run_jobs(
        plan.jobs,
        task_classes,
        data_root,
        work_root,
        cfg_options,
        workers=workers,
        quiet=quiet,
        rerun=rerun,
        resolve=resolve)
    text = format_ablation_tables(plan, rows)
    data = dict(
        tasks=plan.tasks,
        component=OrderedDict(
            (name, [rows[(run, task)] for task in plan.tasks])
            for name, run in plan.components),
        placement=OrderedDict(
            (mode, [rows[(run, task)] for task in plan.tasks])
            for mode, run in plan.placements))
    _write_results(work_root, 'ablation', data, text)
    failures = _failures(rows)
    if failures:
        raise DemoFailure(text, failures)
    return text
