"""Running the demo's (method, task) jobs: the runs of
:mod:`mmtrpts.apis.demo` and :mod:`mmtrpts.apis.demo_ablation`.

A job (:class:`DemoJob`) trains a config on one generated task with the
stock MMEngine runner (train800val200) and tests it on the test split (SPT:
its sensitivity pass first, which writes the allocation its backbone is
built from); :func:`run_jobs` runs a list of them and returns their rows.

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
from mmengine.logging import MMLogger
from mmengine.runner import Runner

from ..complexity import count_flops, count_parameters
from .run_config import apply_train_flags
from .sensitivity import compute_sensitivity
from .task_config import set_task

#: Each run's console output, inside its work dir.
RUN_LOG = 'run.log'
#: Each finished run's row and cache key, inside its work dir.
RESULT_FILE = 'result.json'

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


def failures_of(rows: Dict[Tuple[str, str], Dict]) -> List[Dict]:
    """``run``, ``task``, ``error`` and ``log`` of every failed run among
    ``rows`` (:func:`run_jobs`'s), for :class:`DemoFailure`."""
    return [
        dict(run=run, task=task, error=row['error'], log=row.get('log'))
        for (run, task), row in rows.items() if 'error' in row
    ]


def write_results(work_root: str, name: str, data: Any, text: str) -> None:
    """Write ``data`` to ``<work_root>/<name>.json`` and ``text`` (the
    Markdown table(s)) to ``<work_root>/<name>.md``."""
    os.makedirs(work_root, exist_ok=True)
    with open(osp.join(work_root, f'{name}.json'), 'w') as f:
        json.dump(data, f, indent=1)
    with open(osp.join(work_root, f'{name}.md'), 'w') as f:
        f.write(text + '\n')
