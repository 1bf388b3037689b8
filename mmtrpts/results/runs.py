"""Collect the results of a sweep from its work dirs.

A *run dir* is one ``work_dir``: it holds MMEngine's timestamp folders
(``<YYYYmmdd_HHMMSS>/vis_data/scalars.json`` and ``config.py``) and, when
``tools/sweep.py`` started it, :data:`SWEEP_RECORD`. Our benchmark configs
evaluate on the test split as the ``val`` loop, so every ``accuracy/top1``
line of ``scalars.json`` is a test top-1, its ``step`` the epoch.

Two protocols are read from the same evaluations (docs/benchmarks.md §4):

- ``last``: test top-1 at the final evaluated epoch (our honest default);
- ``max_test``: the best test top-1 over the evaluated epochs (the earliest
  epoch on ties), the protocol of every paper number we could trace.

A resumed run continues in a new timestamp folder whose log says
``resumed epoch: E``; its history is completed with the older folders'
evaluations up to epoch E. Trainable parameters come from the
``Trainable parameters: ...`` line that ``FisherSelectionHook`` logs (the
count the masked optimizer really updates), else from
``selection/selection.json``; runs without selection report none.

Runs are grouped by their parent folder (one group = one sweep) and
summarised by :func:`summarize`; :mod:`.results_format` prints them.
"""
import json
import os
import os.path as osp
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config

from ..datasets.fgvc_meta import FGVC_DATASETS, find_fgvc
from ..datasets.vtab_tasks import VTAB_GROUPS, VTAB_TASKS, find_task

__all__ = [
    'SWEEP_RECORD', 'RunResult', 'read_evaluations', 'read_trainable',
    'identify_task', 'read_sweep_record', 'read_run', 'find_run_dirs',
    'collect_runs', 'summarize'
]

#: Written into a run dir by ``tools/sweep.py``: task, command, exit code.
SWEEP_RECORD = 'sweep.json'
METRIC = 'accuracy/top1'

_TIMESTAMP = re.compile(r'^\d{8}_\d{6}$')
_RESUMED = re.compile(r'resumed epoch: (\d+)')
_TRAINABLE = re.compile(
    r'Trainable parameters: ([\d,]+) / ([\d,]+) \([^)]*\)'
    r'(?:; [\d.]+% of the (\w+) \(([\d,]+)\))?')
_SPLIT_MODES = dict(val='val200', test='test')


@dataclass
class RunResult:
    """What one run dir tells about its run.

    Attributes:
        run_dir (str): The run dir, relative to the sweep root.
        group (str): Its parent folder, relative to the sweep root's
            parent (so the root's own runs are grouped under its name).
        benchmark (str): ``'vtab1k'``, ``'fgvc'``, ``'other'`` (a task
            outside both, e.g. a generated one) or ``'unknown'``.
        task (str, optional): Canonical task key (VTAB folder name, FGVC
            key) or the dataset's own task name.
        status (str): ``'complete'`` (evaluated at ``max_epochs``),
            ``'incomplete'`` (evaluated, stopped or still running),
            ``'no evaluation yet'`` or ``'failed'`` (the sweep recorded a
            non-zero exit code).
        eval_split (str, optional): The split the ``val`` loop evaluates.
        max_epochs (int, optional): ``train_cfg.max_epochs``.
        reached_max_epochs (bool): Whether the final evaluation is at
            ``max_epochs`` (the runner evaluates the last epoch always).
        history (list): ``(epoch, top1)`` of every evaluation.
        last (tuple, optional): ``(epoch, top1)`` of the final evaluation.
        max_test (tuple, optional): ``(epoch, top1)`` of the best one.
        trainable (dict, optional): ``params``, ``denominator``,
            ``denominator_kind``, ``percent`` and ``source``.
        notes (list[str]): Anything a reader should know.
    """

    run_dir: str
    group: str
    benchmark: str = 'unknown'
    task: Optional[str] = None
    status: str = 'no evaluation yet'
    eval_split: Optional[str] = None
    max_epochs: Optional[int] = None
    reached_max_epochs: bool = False
    history: List[Tuple[int, float]] = field(default_factory=list)
    last: Optional[Tuple[int, float]] = None
    max_test: Optional[Tuple[int, float]] = None
    trainable: Optional[Dict] = None
    notes: List[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        """Whether the run counts towards benchmark means."""
        return self.status == 'complete' and self.eval_split == 'test'


def read_evaluations(scalars_file: str,
                     metric: str = METRIC) -> List[Tuple[int, float]]:
    """``(epoch, value)`` of every evaluation in a ``scalars.json``.

    Training lines (no ``metric`` key) are ignored, and so is a line that
    is not complete JSON (the runner may be writing it).
    """
    evaluations = []
    with open(scalars_file) as f:
        for line in f:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if metric in entry:
                evaluations.append((int(entry['step']), float(entry[metric])))
    return evaluations


def _count(text: str) -> int:
    """``'1,234'`` -> 1234."""
    return int(text.replace(',', ''))


def read_trainable(log_text: str) -> Optional[Dict]:
    """Parse the last ``Trainable parameters:`` line of a run log.

    Returns:
        dict, optional: ``params``, ``model_params``, ``denominator`` and
        ``denominator_kind`` (the budget's denominator, else the model).
    """
    matches = _TRAINABLE.findall(log_text)
    if not matches:
        return None
    params, model, kind, denominator = matches[-1]
    model = _count(model)
    return dict(params=_count(params), model_params=model,
                denominator=_count(denominator) if denominator else model,
                denominator_kind=kind or 'model')


def _trainable_from_selection(run_dir: str) -> Optional[Dict]:
    path = osp.join(run_dir, 'selection', 'selection.json')
    if not osp.isfile(path):
        return None
    with open(path) as f:
        budget = json.load(f).get('budget') or {}
    if not budget.get('trainable') or not budget.get('denominator'):
        return None
    return dict(params=budget['trainable'],
                denominator=budget['denominator'],
                denominator_kind=budget.get('denominator_kind', 'backbone'))


def _eval_split(dataset: dict) -> Optional[str]:
    if dataset.get('split_mode') is not None:
        return _SPLIT_MODES.get(dataset['split_mode'])
    return dataset.get('split')


def identify_task(cfg: Config) -> Tuple[str, Optional[str], Optional[str]]:
    """Benchmark, task key and evaluation split of a (dumped) config.

    Returns:
        tuple: ``(benchmark, task, eval_split)``; the benchmark is
        ``'vtab1k'`` / ``'fgvc'`` for their tasks, ``'other'`` for other
        tasks of these dataset types and ``'unknown'`` otherwise.
    """
    loader = cfg.get('val_dataloader') or {}
    dataset = loader.get('dataset') or {}
    kind = str(dataset.get('type', '')).split('.')[-1]
    split = _eval_split(dataset)
    if kind == 'VTAB1k':
        info = find_task(dataset['task'])
        return (('vtab1k', info.folder, split) if info else
                ('other', dataset['task'], split))
    if kind == 'FGVC':
        name = dataset.get('dataset', 'cub')
        info = find_fgvc(name)
        return ('fgvc', info.name, split) if info else ('other', name, split)
    return 'unknown', None, split


def _timestamp_dirs(run_dir: str) -> List[str]:
    """Timestamp folders of a run dir, oldest first."""
    return sorted(
        osp.join(run_dir, name) for name in os.listdir(run_dir)
        if _TIMESTAMP.match(name) and osp.isdir(osp.join(run_dir, name)))


def _read_log(stamp_dir: str) -> str:
    path = osp.join(stamp_dir, f'{osp.basename(stamp_dir)}.log')
    if not osp.isfile(path):
        return ''
    with open(path, errors='replace') as f:
        return f.read()


def _evaluations(stamp_dir: str, metric: str) -> List[Tuple[int, float]]:
    path = osp.join(stamp_dir, 'vis_data', 'scalars.json')
    return read_evaluations(path, metric) if osp.isfile(path) else []


def _history(stamps: List[str], metric: str,
             notes: List[str]) -> Tuple[Optional[str], List]:
    """The newest folder with evaluations and the run's full history.

    Walking back from that folder, a ``resumed epoch: E`` in its log pulls
    in the next older folder's evaluations up to epoch E.
    """
    evals = {stamp: _evaluations(stamp, metric) for stamp in stamps}
    evaluated = [stamp for stamp in stamps if evals[stamp]]
    if not evaluated:
        return None, []
    newest = evaluated[-1]
    for stamp in stamps[stamps.index(newest) + 1:]:
        notes.append(f'newer log {osp.basename(stamp)} has no evaluation '
                     '(a test run, a failed attempt or still before its '
                     'first evaluation)')
    history = evals[newest]
    resumed = _RESUMED.findall(_read_log(newest))
    for older in reversed(evaluated[:-1]):
        if not resumed:
            break
        cutoff = int(resumed[-1])
        history = [e for e in evals[older] if e[0] <= cutoff] + history
        notes.append(f'resumed at epoch {cutoff}: epochs up to it from '
                     f'{osp.basename(older)}')
        resumed = _RESUMED.findall(_read_log(older))
    return newest, sorted(history)


def _load_config(run_dir: str, stamp: Optional[str],
                 notes: List[str]) -> Optional[Config]:
    """The run's config: the timestamp folder's copy, else the dumped one."""
    candidates = []
    if stamp is not None:
        candidates.append(osp.join(stamp, 'vis_data', 'config.py'))
    candidates += sorted(
        osp.join(run_dir, name) for name in os.listdir(run_dir)
        if name.endswith('.py'))
    for path in candidates:
        if osp.isfile(path):
            try:
                return Config.fromfile(path, import_custom_modules=False)
            except Exception as error:  # any error of a foreign config
                notes.append(f'config {path} unreadable: {error}')
    return None


def read_sweep_record(run_dir: str) -> Optional[Dict]:
    """The run dir's :data:`SWEEP_RECORD`, or None without one."""
    path = osp.join(run_dir, SWEEP_RECORD)
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def read_run(run_dir: str, root: str, metric: str = METRIC) -> RunResult:
    """Read one run dir.

    Args:
        run_dir (str): The run's ``work_dir``.
        root (str): The sweep root (names are given relative to it).
        metric (str): The evaluation key. Defaults to ``accuracy/top1``.

    Returns:
        RunResult: The run, whatever state it is in.
    """
    rel = osp.relpath(run_dir, root)
    group = osp.join(osp.basename(osp.abspath(root)), osp.dirname(rel))
    result = RunResult(run_dir=rel, group=osp.normpath(group))
    stamps = _timestamp_dirs(run_dir)
    newest, result.history = _history(stamps, metric, result.notes)
    newest = newest or (stamps[-1] if stamps else None)
    cfg = _load_config(run_dir, newest, result.notes)
    record = read_sweep_record(run_dir)
    if cfg is not None:
        result.benchmark, result.task, result.eval_split = identify_task(cfg)
        result.max_epochs = (cfg.get('train_cfg') or {}).get('max_epochs')
    elif record is not None:
        result.benchmark = record.get('benchmark') or 'unknown'
        result.task = record.get('task')
    else:
        result.notes.append('no config found')
    if result.eval_split not in (None, 'test'):
        result.notes.append(f'evaluates on {result.eval_split}, not test: '
                            'left out of the means')
    if result.history:
        result.last = result.history[-1]
        result.max_test = max(result.history, key=lambda e: (e[1], -e[0]))
        result.reached_max_epochs = result.last[0] == result.max_epochs
        result.status = ('complete'
                         if result.reached_max_epochs else 'incomplete')
    if record is not None and record.get('returncode'):
        result.status = 'failed'
        result.notes.append(f'exit code {record["returncode"]}')
    elif record is not None and 'returncode' not in record:
        result.notes.append('the sweep started it and has not recorded an '
                            'exit code (running, or the sweep was killed)')
    result.trainable = _trainable(run_dir, newest)
    return result


def _trainable(run_dir: str, stamp: Optional[str]) -> Optional[Dict]:
    trainable = read_trainable(_read_log(stamp)) if stamp else None
    source = 'log'
    if trainable is None:
        trainable, source = _trainable_from_selection(run_dir), 'selection'
    if trainable is None:
        return None
    return dict(trainable, source=source, percent=100 * trainable['params'] /
                trainable['denominator'])


def find_run_dirs(root: str) -> List[str]:
    """Run dirs under ``root`` (``root`` itself may be one), sorted.

    A run dir holds a timestamp folder or a :data:`SWEEP_RECORD`; the
    search does not descend into run dirs.
    """
    found = []
    for path, dirs, files in os.walk(root):
        if SWEEP_RECORD in files or any(_TIMESTAMP.match(d) for d in dirs):
            found.append(path)
            dirs[:] = []
        dirs.sort()
    return sorted(found)


def collect_runs(root: str, metric: str = METRIC) -> List[RunResult]:
    """Read every run dir under ``root``."""
    if not osp.isdir(root):
        raise FileNotFoundError(f'sweep root {root!r} is not a directory')
    return [read_run(path, root, metric) for path in find_run_dirs(root)]


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    """The mean, or None if a value is None (or there is none)."""
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)


def _why_missing(runs: List[RunResult]) -> Optional[str]:
    """None if exactly one usable run, else the reason it cannot count."""
    if not runs:
        return 'no run'
    if len(runs) > 1:
        return f'{len(runs)} runs: ' + ', '.join(r.run_dir for r in runs)
    run = runs[0]
    if run.usable:
        return None
    if run.status == 'incomplete':
        return f'incomplete: epoch {run.last[0]}/{run.max_epochs}'
    if run.status == 'complete':
        return f'evaluated on {run.eval_split or "an unknown split"}'
    return run.status


def _summary(members: Sequence[str], runs: Dict[str, List[RunResult]],
             reasons: Dict[str, str]) -> Dict:
    """``last``, ``max_test`` and ``trainable_percent`` means of members."""
    usable = [runs[t][0] for t in members if t not in reasons]
    if len(usable) < len(members):
        usable = []
    percents = [r.trainable and r.trainable['percent'] for r in usable]
    return dict(last=_mean([r.last[1] for r in usable]),
                max_test=_mean([r.max_test[1] for r in usable]),
                trainable_percent=_mean(percents), members=len(members),
                missing={t: reasons[t] for t in members if t in reasons})


def summarize(runs: Sequence[RunResult]) -> Dict:
    """Benchmark means of one group of runs.

    A mean is computed only when every member task has exactly one
    complete run evaluated on test; otherwise it is None and ``missing``
    says why for each absent task. ``group_mean`` is the mean of the three
    VTAB group means (SPT's convention), ``mean19`` the mean over the 19
    tasks (V-PETL, GPS, RLRR, TR-PTS).

    Returns:
        dict: ``{'vtab1k': {natural, specialized, structured, mean19,
        group_mean}, 'fgvc': {mean}}`` for the benchmarks with runs; each
        entry has ``last``, ``max_test``, ``trainable_percent``,
        ``members`` and ``missing`` (task -> reason).
    """
    out = {}
    for benchmark, tasks in (('vtab1k', tuple(VTAB_TASKS)),
                             ('fgvc', tuple(FGVC_DATASETS))):
        by_task = {t: [r for r in runs
                       if r.benchmark == benchmark and r.task == t]
                   for t in tasks}
        if not any(by_task.values()):
            continue
        reasons = {t: why for t, rs in by_task.items()
                   if (why := _why_missing(rs)) is not None}
        if benchmark == 'fgvc':
            out[benchmark] = dict(mean=_summary(tasks, by_task, reasons))
            continue
        summary = {group: _summary(members, by_task, reasons)
                   for group, members in VTAB_GROUPS.items()}
        summary['mean19'] = _summary(tasks, by_task, reasons)
        summary['group_mean'] = dict(
            {key: _mean([summary[g][key] for g in VTAB_GROUPS])
             for key in ('last', 'max_test', 'trainable_percent')},
            members=len(VTAB_GROUPS), missing=summary['mean19']['missing'])
        out[benchmark] = summary
    return out
