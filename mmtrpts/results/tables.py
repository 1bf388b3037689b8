"""Markdown and JSON reports of collected runs beside the paper numbers.

See :mod:`.results` for how runs are read and summarised and
:mod:`.paper_results` for the published rows.
"""
from collections import OrderedDict
from dataclasses import asdict
from typing import Dict, List, Optional, Sequence

from ..datasets.fgvc_meta import FGVC_DATASETS
from ..datasets.vtab_tasks import VTAB_TASKS
from .paper import PAPER_FGVC, PAPER_VTAB, PaperResult
from .runs import RunResult, summarize

__all__ = ['PROTOCOLS', 'group_runs', 'format_markdown', 'results_to_json']

#: What the two reported numbers mean (docs/benchmarks.md §4).
PROTOCOLS = OrderedDict(
    last='test top-1 at the final evaluated epoch',
    max_test='best test top-1 over the evaluated epochs (the protocol of '
    'the paper numbers; chosen on test, so not a leak-free estimate)')

_NA = '-'
_MEAN_ROWS = OrderedDict(
    vtab1k=OrderedDict(natural='Natural', specialized='Specialized',
                       structured='Structured', mean19='19-task mean',
                       group_mean='Group-mean'),
    fgvc=OrderedDict(mean='FGVC mean'))
_SECTIONS = (('vtab1k', 'VTAB-1k', tuple(VTAB_TASKS), PAPER_VTAB),
             ('fgvc', 'FGVC', tuple(FGVC_DATASETS), PAPER_FGVC))


def group_runs(runs: Sequence[RunResult]) -> Dict[str, List[RunResult]]:
    """Runs by group (parent folder), in order of first appearance."""
    groups: Dict[str, List[RunResult]] = OrderedDict()
    for run in runs:
        groups.setdefault(run.group, []).append(run)
    return groups


def _top1(value: Optional[float]) -> str:
    return _NA if value is None else f'{value:.2f}'


def _percent(value: Optional[float]) -> str:
    return _NA if value is None else f'{value:.2f}%'


def _trainable(run: RunResult) -> str:
    info = run.trainable
    if info is None:
        return _NA
    text = f'{info["params"]:,} ({info["percent"]:.2f}%'
    if info['denominator_kind'] != 'backbone':
        text += f' of the {info["denominator_kind"]}'
    return text + ')'


def _status(run: RunResult) -> str:
    if run.status == 'complete' and run.eval_split not in (None, 'test'):
        return f'complete (on {run.eval_split})'
    return run.status


def _run_cells(run: RunResult) -> List[str]:
    last = max_test = _NA
    if run.last is not None:
        total = _NA if run.max_epochs is None else run.max_epochs
        last = f'{run.last[1]:.2f} (ep {run.last[0]}/{total})'
        max_test = f'{run.max_test[1]:.2f} (ep {run.max_test[0]})'
    return [last, max_test, _trainable(run), _status(run)]


def _paper_value(value: Optional[float]) -> str:
    return _NA if value is None else str(value)


def _row(cells: Sequence[str]) -> str:
    return '| ' + ' | '.join(cells) + ' |'


def _header(papers: Sequence[PaperResult]) -> List[str]:
    cells = ['Task', 'last top-1 (epoch)', 'max_test top-1 (epoch)',
             'Trainable', 'Status'] + [f'{p.label} ({p.protocol})'
                                       for p in papers]
    return [_row(cells), _row(['---'] * len(cells))]


def _benchmark_table(runs: Sequence[RunResult], summary: Dict, key: str,
                     tasks: Sequence[str],
                     papers: Sequence[PaperResult]) -> List[str]:
    lines = _header(papers)
    for task in tasks:
        paper = [_paper_value(p.per_task[task]) for p in papers]
        matched = [r for r in runs if r.benchmark == key and r.task == task]
        for run in matched:
            lines.append(_row([task] + _run_cells(run) + paper))
        if not matched:
            lines.append(_row([task, _NA, _NA, _NA, 'no run'] + paper))
    for name, label in _MEAN_ROWS[key].items():
        entry = summary[name]
        missing = len(entry['missing'])
        ours = [
            _top1(entry[k]) if missing == 0 else f'n/a ({missing} missing)'
            for k in ('last', 'max_test')
        ]
        lines.append(
            _row([f'**{label}**'] + ours +
                 [_percent(entry['trainable_percent']), ''] +
                 [_paper_value(p.means[name]) for p in papers]))
    lines.append(_row(['Trainable (paper)', '', '', '', ''] +
                      [p.params or _NA for p in papers]))
    return lines


def _missing_lines(summary: Dict) -> List[str]:
    lines = []
    for key, name, _, _ in _SECTIONS:
        missing = OrderedDict()
        for entry in summary.get(key, {}).values():
            missing.update(entry['missing'])
        if missing:
            lines.append(f'Left out of the {name} means: ' + '; '.join(
                f'{task} ({why})' for task, why in missing.items()) + '.')
    return lines


def _paper_lines(papers: Dict[str, PaperResult]) -> List[str]:
    lines = []
    for paper in papers.values():
        note = f'; {paper.note}' if paper.note else ''
        lines.append(f'- {paper.label} ({paper.benchmark}): {paper.source}; '
                     f'protocol {paper.protocol}{note}.')
    return lines


def _select(table: Dict[str, PaperResult],
            methods: Sequence[str]) -> List[PaperResult]:
    return [table[m] for m in methods if m in table]


def format_markdown(runs: Sequence[RunResult],
                    papers: Sequence[str] = ('trpts', 'gps', 'full'),
                    title: str = 'Results') -> str:
    """Per-group Markdown tables of our runs beside the paper columns.

    Args:
        runs (Sequence[RunResult]): From :func:`~.results.collect_runs`.
        papers (Sequence[str]): Method keys of
            :data:`~.paper_results.PAPER_METHODS` shown as columns.
        title (str): Title of the report.

    Returns:
        str: The report.
    """
    lines = [f'# {title}', '']
    lines += [f'- **{k}**: {v}.' for k, v in PROTOCOLS.items()]
    lines += ['- Means use only complete runs evaluated on test; Trainable '
              'is the count the optimizer updates and its share of the '
              'backbone (the papers\' convention) unless marked; '
              f'{_NA} where the run has no parameter selection record.', '']
    shown = OrderedDict()
    for group, members in group_runs(runs).items():
        plural = 's' if len(members) > 1 else ''
        lines += [f'## {group} ({len(members)} run{plural})', '']
        summary = summarize(members)
        for key, name, tasks, table in _SECTIONS:
            if key not in summary:
                continue
            selected = _select(table, papers)
            shown.update((f'{key}/{p.method}', p) for p in selected)
            lines += [f'### {name}', '']
            lines += _benchmark_table(members, summary[key], key, tasks,
                                      selected)
            lines.append('')
        others = [r for r in members if r.benchmark not in summary]
        if others:
            lines += ['### Other tasks (no paper numbers)', '']
            lines += _header([])
            lines += [_row([r.task or r.run_dir] + _run_cells(r))
                      for r in others]
            lines.append('')
        lines += _missing_lines(summary)
        notes = [f'- `{r.run_dir}`: ' + '; '.join(r.notes) + '.'
                 for r in members if r.notes]
        lines += (['Notes:'] + notes) if notes else []
        lines.append('')
    if not runs:
        lines += ['No run dirs found.', '']
    if shown:
        lines += ['Paper columns:'] + _paper_lines(shown) + ['']
    return '\n'.join(lines).rstrip() + '\n'


def _run_json(run: RunResult) -> Dict:
    data = asdict(run)
    data['usable'] = run.usable
    for key in ('last', 'max_test'):
        if getattr(run, key) is not None:
            epoch, top1 = getattr(run, key)
            data[key] = dict(epoch=epoch, top1=top1)
    return data


def results_to_json(runs: Sequence[RunResult],
                    papers: Sequence[str] = ('trpts', 'gps',
                                             'full')) -> Dict:
    """The same report as a JSON-serialisable dict.

    Returns:
        dict: ``protocols``; ``groups``: group -> ``runs`` (each run's
        fields, ``last`` / ``max_test`` as ``{epoch, top1}``, ``usable``)
        and ``summary`` (:func:`~.results.summarize`); ``paper``:
        benchmark -> method -> the published row.
    """
    groups = OrderedDict(
        (group, dict(runs=[_run_json(r) for r in members],
                     summary=summarize(members)))
        for group, members in group_runs(runs).items())
    paper = {key: {p.method: p._asdict() for p in _select(table, papers)}
             for key, _, _, table in _SECTIONS}
    return dict(protocols=dict(PROTOCOLS), groups=groups, paper=paper)
