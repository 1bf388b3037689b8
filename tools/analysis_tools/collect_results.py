"""Collect the work dirs of a sweep into one results table.

Every run dir under SWEEP_ROOT (one ``work_dir`` each, as ``tools/sweep.py``
lays them out) is read: per task the last-epoch test top-1, the
best-over-epochs test top-1 (``max_test``, the papers' protocol) with their
epochs, and the trainable parameters; per benchmark the VTAB-1k group
means, the 19-task mean and group-mean, and the FGVC mean, beside the
published numbers (docs/benchmarks.md §5). Runs are grouped by parent folder.

Example:
    python tools/analysis_tools/collect_results.py work_dirs/trpts_vtab1k \\
        --out results.md --json results.json --paper trpts gps rlrr full
"""
import argparse
import json
import os.path as osp

import mmtrpts  # noqa: F401  (stack fixes first)
from mmtrpts.results.paper import PAPER_METHODS
from mmtrpts.results.runs import METRIC, collect_runs
from mmtrpts.results.tables import format_markdown, results_to_json


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        'root',
        metavar='SWEEP_ROOT',
        help='folder holding the run dirs of a sweep')
    parser.add_argument('--out', help='also write the Markdown report here')
    parser.add_argument('--json', help='also write the report as JSON here')
    parser.add_argument(
        '--paper',
        nargs='*',
        default=['trpts', 'gps', 'full'],
        choices=PAPER_METHODS,
        metavar='METHOD',
        help='paper columns, from: ' + ', '.join(PAPER_METHODS) +
        ' (default: trpts gps full)')
    parser.add_argument(
        '--metric',
        default=METRIC,
        help=f'evaluation key in scalars.json (default: '
        f'{METRIC})')
    return parser.parse_args()


def main():
    args = parse_args()
    runs = collect_runs(args.root, args.metric)
    title = f'Results of {osp.normpath(args.root)}'
    report = format_markdown(runs, args.paper, title=title)
    print(report, end='')
    if args.out:
        with open(args.out, 'w') as f:
            f.write(report)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results_to_json(runs, args.paper), f, indent=1)


if __name__ == '__main__':
    main()
