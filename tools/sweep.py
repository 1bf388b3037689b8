"""Train one method on every task of a benchmark: one run per task.

Each task trains with its own config into ``WORK_ROOT/<task>`` (a
``sweep.json`` there records the command and its exit code for
``tools/analysis_tools/collect_results.py``). Config files by benchmark:

- ``vtab1k``: ``CONFIG_DIR/<prefix>_vtab1k-<token>.py`` (token:
  ``cifar100``, ``clevr-count``, ...);
- ``fgvc``: ``CONFIG_DIR/<prefix>_<name>.py`` (``cub``, ``nabirds``,
  ``flowers``, ``dogs``, ``cars``);
- ``mini-vtab``: one config for all generated tasks,
  ``configs/embedded/vit-tiny_<method>_mini-vtab.py`` (method ``full-ft``,
  ``linear-probe``, ``trpts-param``, ``trpts``, ``gps``, ``rlrr``,
  ``sparse-tuning``, ``spt-lora``); the task and its class count are set per
  run with ``--cfg-options``.

For ``vtab1k`` and ``fgvc`` the method gives ``CONFIG_DIR`` (``--config-dir``
overrides it) and ``prefix`` (:data:`METHOD_CONFIGS`): ``configs/spt`` with
``vit-b-lora`` for ``spt-lora`` and ``vit-b-adapter`` for ``spt-adapter``;
``configs/<method>`` with ``vit-b`` for the others (``trpts``, ``gps``,
``rlrr``, ``sparse-tuning``).

``--configs`` runs the given files as they are instead (run dirs named after
them). Launchers: ``none`` runs the tasks one after the other with
``tools/train.py`` (``tools/dist_train.sh CONFIG GPUS`` when ``--gpus`` > 1),
``pytorch`` always with ``tools/dist_train.sh``, ``slurm`` submits one job
per task at once with ``tools/slurm_train.sh PARTITION JOB CONFIG WORK_DIR``
(``GPUS`` = ``--gpus``) and waits for all. A failed task does not stop the
sweep; failures are listed at the end and the exit code is 1.

Examples:
    python tools/sweep.py --benchmark vtab1k --method trpts --dry-run
    python tools/sweep.py --benchmark fgvc --method spt-adapter --dry-run
    python tools/sweep.py --benchmark fgvc --launcher slurm --partition gpu \\
        --gpus 4
    python tools/sweep.py --benchmark mini-vtab --method trpts-param \\
        --tasks location orientation --cfg-options train_cfg.max_epochs=3
"""
import argparse
import json
import os
import os.path as osp
import shlex
import subprocess
import sys
import time
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import mmtrpts  # noqa: F401  (stack fixes first)
from mmtrpts.datasets.fgvc_meta import FGVC_DATASETS, resolve_fgvc
from mmtrpts.datasets.synthetic.tasks import TARGET_TASKS
from mmtrpts.datasets.vtab_tasks import VTAB_TASKS, resolve_task
from mmtrpts.results.runs import SWEEP_RECORD

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOLS = osp.join(ROOT, 'tools')
#: method -> (config dir, file-name prefix) of its ViT-B benchmark configs,
#: for the methods whose configs are not ``configs/<method>/vit-b_*.py``.
METHOD_CONFIGS = {
    'spt-lora': ('configs/spt', 'vit-b-lora'),
    'spt-adapter': ('configs/spt', 'vit-b-adapter'),
}
#: benchmark -> (default config dir, config file name pattern); ``{dir}`` and
#: ``{prefix}`` are the method's entry of :data:`METHOD_CONFIGS`.
CONFIG_PATTERNS = {
    'vtab1k': ('{dir}', '{prefix}_vtab1k-{token}.py'),
    'fgvc': ('{dir}', '{prefix}_{task}.py'),
    'mini-vtab': ('configs/embedded', 'vit-tiny_{method}_mini-vtab.py'),
}
_LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


class Job(NamedTuple):
    """One training run of the sweep."""

    name: str  # run dir name under the work root
    task: Optional[str]  # canonical task key (None for explicit configs)
    config: str
    options: Tuple[str, ...]  # per-task --cfg-options


def resolve_tasks(benchmark: str, names: Optional[Sequence[str]]) -> Dict:
    """Canonical task key -> config token, in benchmark order.

    Raises:
        ValueError: A name is not a task of the benchmark.
    """
    if benchmark == 'vtab1k':
        infos = ([resolve_task(n)
                  for n in names] if names else list(VTAB_TASKS.values()))
        return {info.folder: info.token for info in infos}
    if benchmark == 'fgvc':
        keys = ([resolve_fgvc(n).name
                 for n in names] if names else list(FGVC_DATASETS))
        return {key: key for key in keys}
    unknown = set(names or ()) - set(TARGET_TASKS)
    if unknown:
        raise ValueError(f'Unknown mini-vtab task(s) {sorted(unknown)}; '
                         f'generated tasks: {sorted(TARGET_TASKS)}')
    return {task: task for task in (names or TARGET_TASKS)}


def task_options(task: str, num_classes: int) -> Tuple[str, ...]:
    """``--cfg-options`` that point a mini-vtab config at one task.

    The same settings as :func:`mmtrpts.apis.set_task`: the task and class
    count of the three dataloaders, the head and the data preprocessor.
    """
    options = []
    for loader in _LOADERS:
        options += [
            f'{loader}.dataset.task={task}',
            f'{loader}.dataset.num_classes={num_classes}'
        ]
    return tuple(options) + (f'model.head.num_classes={num_classes}',
                             f'data_preprocessor.num_classes={num_classes}')


def method_configs(method: str) -> Tuple[str, str]:
    """The config dir (relative to the repository) and file-name prefix of
    ``method``'s ViT-B benchmark configs (:data:`METHOD_CONFIGS`)."""
    return METHOD_CONFIGS.get(method, (f'configs/{method}', 'vit-b'))


def benchmark_jobs(benchmark: str,
                   method: str,
                   tasks: Dict[str, str],
                   config_dir: Optional[str] = None) -> List[Job]:
    """One job per task, configs found by :data:`CONFIG_PATTERNS`."""
    default_dir, pattern = CONFIG_PATTERNS[benchmark]
    method_dir, prefix = method_configs(method)
    fields = dict(method=method, dir=method_dir, prefix=prefix)
    config_dir = config_dir or osp.join(ROOT, default_dir.format(**fields))
    jobs = []
    for task, token in tasks.items():
        config = osp.join(config_dir,
                          pattern.format(token=token, task=task, **fields))
        options = (
            task_options(task, TARGET_TASKS[task].num_classes)
            if benchmark == 'mini-vtab' else ())
        jobs.append(Job(token, task, config, options))
    return jobs


def explicit_jobs(configs: Sequence[str]) -> List[Job]:
    """One job per given config, named after the file."""
    return [
        Job(osp.splitext(osp.basename(c))[0], None, c, ()) for c in configs
    ]


def train_command(job: Job,
                  work_dir: str,
                  options: Sequence[str],
                  launcher: str,
                  gpus: int,
                  partition: Optional[str] = None,
                  job_name: str = '') -> Tuple[Dict[str, str], List[str]]:
    """The environment additions and the command line of one job."""
    options = list(job.options) + list(options)
    extra = ['--cfg-options'] + options if options else []
    python = os.environ.get('PYTHON', sys.executable)
    if launcher == 'slurm':
        env = dict(
            PYTHON=python, GPUS=str(gpus), GPUS_PER_NODE=str(min(gpus, 8)))
        return env, [
            'bash',
            osp.join(TOOLS, 'slurm_train.sh'), partition, job_name, job.config,
            work_dir
        ] + extra
    if launcher == 'pytorch' or gpus > 1:
        return dict(PYTHON=python), [
            'bash',
            osp.join(TOOLS, 'dist_train.sh'), job.config,
            str(gpus), '--work-dir', work_dir
        ] + extra
    return {}, [
        python,
        osp.join(TOOLS, 'train.py'), job.config, '--work-dir', work_dir
    ] + extra


def write_record(work_dir: str, record: Dict) -> None:
    """Write the run dir's :data:`SWEEP_RECORD`."""
    os.makedirs(work_dir, exist_ok=True)
    with open(osp.join(work_dir, SWEEP_RECORD), 'w') as f:
        json.dump(record, f, indent=1)


def shell_line(env: Dict[str, str], command: Sequence[str]) -> str:
    """The command as one copy-pastable shell line."""
    return ' '.join([f'{k}={shlex.quote(v)}'
                     for k, v in env.items()] + [shlex.join(command)])


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='\n'.join(__doc__.splitlines()[2:]))
    parser.add_argument(
        '--benchmark', choices=list(CONFIG_PATTERNS), default='vtab1k')
    parser.add_argument(
        '--method',
        default='trpts',
        help='method: selects the config dir / file name')
    parser.add_argument(
        '--config-dir',
        help='where the per-task configs are (default: '
        'configs/<method>, configs/spt for spt-lora / spt-adapter; '
        'mini-vtab: configs/embedded)')
    parser.add_argument(
        '--configs',
        nargs='+',
        metavar='CONFIG',
        help='run these configs as they are instead')
    parser.add_argument(
        '--tasks',
        nargs='+',
        metavar='TASK',
        help='a subset of the tasks (names or aliases)')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm'], default='none')
    parser.add_argument(
        '--gpus', type=int, default=1, help='GPUs (or CPU ranks) per task')
    parser.add_argument('--partition', help='slurm partition')
    parser.add_argument(
        '--work-root',
        help='parent of the run dirs (default: '
        'work_dirs/<method>_<benchmark>)')
    parser.add_argument(
        '--data-root', help='benchmark root for all three dataloaders')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        default=[],
        metavar='KEY=VALUE',
        help='passed to every run after the per-task ones')
    parser.add_argument(
        '--dry-run',
        action='store_true',
        help='print the commands, run nothing')
    args = parser.parse_args()
    if args.launcher == 'slurm' and not args.partition:
        parser.error('--launcher slurm needs --partition')
    if args.configs and args.tasks:
        parser.error('--tasks selects pattern configs; with --configs list '
                     'only the configs to run')
    return parser, args


def main():
    parser, args = parse_args()
    if args.configs:
        jobs = explicit_jobs(args.configs)
    else:
        try:
            tasks = resolve_tasks(args.benchmark, args.tasks)
        except ValueError as error:
            parser.error(str(error))
        jobs = benchmark_jobs(args.benchmark, args.method, tasks,
                              args.config_dir)
    missing = [job.config for job in jobs if not osp.isfile(job.config)]
    if missing and not args.dry_run:
        parser.error('config(s) not found: ' + ', '.join(missing))
    work_root = osp.abspath(
        args.work_root
        or osp.join('work_dirs', f'{args.method}_{args.benchmark}'))
    options = [
        f'{loader}.dataset.data_root={args.data_root}'
        for loader in _LOADERS if args.data_root
    ] + args.cfg_options

    runs = []
    for job in jobs:
        work_dir = osp.join(work_root, job.name)
        env, command = train_command(job, work_dir, options, args.launcher,
                                     args.gpus, args.partition,
                                     f'{args.method}-{job.name}')
        runs.append((job, work_dir, env, command))
    if args.dry_run:
        for job, _, env, command in runs:
            absent = '  # config not found' if job.config in missing else ''
            print(shell_line(env, command) + absent)
        return
    if args.launcher == 'slurm':
        codes = run_parallel(runs, args)
    else:
        codes = run_sequential(runs, args)
    report(jobs, codes, work_root)


def _record(args, job: Job, command: List[str]) -> Dict:
    return dict(
        benchmark=None if args.configs else args.benchmark,
        method=args.method,
        task=job.task,
        config=job.config,
        command=command,
        started=time.strftime('%Y-%m-%d %H:%M:%S'))


def _finish(work_dir: str, record: Dict, code: int) -> None:
    record.update(returncode=code, finished=time.strftime('%Y-%m-%d %H:%M:%S'))
    write_record(work_dir, record)


def run_sequential(runs, args) -> List[int]:
    """Run the jobs one after the other; return their exit codes."""
    codes = []
    for i, (job, work_dir, env, command) in enumerate(runs):
        print(
            f'[{i + 1}/{len(runs)}] {job.name}: {shell_line(env, command)}',
            flush=True)
        record = _record(args, job, command)
        write_record(work_dir, record)
        code = subprocess.run(command, env=dict(os.environ, **env)).returncode
        _finish(work_dir, record, code)
        codes.append(code)
    return codes


def run_parallel(runs, args) -> List[int]:
    """Start every job at once (output to ``<work_dir>/sweep.out``); wait."""
    started = []
    for job, work_dir, env, command in runs:
        record = _record(args, job, command)
        write_record(work_dir, record)
        out = open(osp.join(work_dir, 'sweep.out'), 'w')
        print(
            f'{job.name}: {shell_line(env, command)} > {out.name}', flush=True)
        process = subprocess.Popen(
            command,
            env=dict(os.environ, **env),
            stdout=out,
            stderr=subprocess.STDOUT)
        started.append((work_dir, record, out, process))
    codes = []
    for work_dir, record, out, process in started:
        code = process.wait()
        out.close()
        _finish(work_dir, record, code)
        codes.append(code)
    return codes


def report(jobs: Sequence[Job], codes: Sequence[int], work_root: str):
    """Print the outcome; exit 1 if a task failed."""
    failed = [(job.name, code) for job, code in zip(jobs, codes) if code]
    print(f'{len(jobs) - len(failed)}/{len(jobs)} runs succeeded under '
          f'{work_root}; collect them with\n  python '
          f'tools/analysis_tools/collect_results.py {work_root}')
    if failed:
        print('Failed: ' + ', '.join(f'{name} (exit {code})'
                                     for name, code in failed))
        sys.exit(1)


if __name__ == '__main__':
    main()
