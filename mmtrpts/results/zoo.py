"""Publish finished runs as model-zoo entries.

:func:`publish` turns the run dirs of a sweep into zoo entries, one per
run:

1. **Checkpoint.** The run's final checkpoint (``last_checkpoint``, else
   the newest ``epoch_N`` / ``iter_N``) is exported as a delta against the
   pretrained base (:func:`~mmtrpts.checkpoints.export.export_checkpoint`:
   the selection record of a TR-PTS/GPS run, else the entries that differ
   from the base), named ``<name>_<YYYYMMDD>-<sha256[:8]>.pth``
   (:func:`~mmtrpts.checkpoints.zoo.zoo_file_name`) and written to the zoo
   folder.  The base is referred to by its file name, next to the deltas.
2. **Name.** ``<config folder>_<config name>``, the name the benchmark
   metafiles give a config (``trpts_vit-b_cub``, ``spt_vit-b-lora_cub``);
   a run of a config shared by several tasks (the generated mini-VTAB,
   whose task is set by ``--cfg-options``) gets ``-<task>`` appended.
3. **Metafile.** A name that a metafile of the model index already lists
   gets ``Results`` (test top-1 at the last epoch and the best over epochs,
   each labelled), ``Weights`` (``mmtrpts-zoo://<file>``) and metadata
   (base checkpoint, trainable parameters, token-selection blocks, and the
   ``--cfg-options`` of the sweep other than data roots, if any).  Any
   other run becomes an entry of the zoo folder's own ``metafile.yml``,
   with the run's dumped config copied to ``configs/<name>.py``, and the
   zoo's ``model-index.yml`` imports it.
4. **README.** Every metafile touched gets its result table written
   between :data:`TABLE_BEGIN` and :data:`TABLE_END` in the ``README.md``
   beside it.

Runs that are not complete (or failed) are refused with their reason,
unless ``skip_incomplete`` lists them as left out.
"""
import os
import os.path as osp
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import yaml

from ..checkpoints.delta import is_delta
from ..checkpoints.export import export_checkpoint
from ..checkpoints.io import load_checkpoint_file
from ..checkpoints.zoo import ZOO_SCHEME, zoo_file_name
from ..datasets.fgvc_meta import FGVC_DATASETS
from ..utils.hashing import sha256_file
from .metafile import model_name
from .runs import RunResult, read_run, read_sweep_record

__all__ = [
    'BASE_LABELS', 'TABLE_BEGIN', 'TABLE_END', 'ZooEntry', 'base_label',
    'find_checkpoint', 'training_overrides', 'zoo_model_name', 'results_table',
    'write_readme_table', 'publish'
]

#: Shorthands of ``--base-label`` for the two ViT-B/16 IN-21k bases.
BASE_LABELS = {
    'original': 'ViT-B/16 IN-21k (original)',
    'augreg': 'ViT-B/16 IN-21k (AugReg)',
}
TABLE_BEGIN = '<!-- zoo-results: begin (tools/misc/publish_zoo.py) -->'
TABLE_END = '<!-- zoo-results: end -->'
METRIC_LAST = 'Top 1 Accuracy (last epoch)'
METRIC_MAX = 'Top 1 Accuracy (max test)'
ZOO_METAFILE = 'metafile.yml'
ZOO_INDEX = 'model-index.yml'
_CHECKPOINT = re.compile(r'^(epoch|iter)_(\d+)\.pth$')
_TOKEN_MASK = 'backbone.keep_layer_mask'


@dataclass
class ZooEntry:
    """One published run.

    Attributes:
        name (str): The model name (``get_model(name)``).
        run_dir (str): The run dir it came from.
        file (str): The zoo file name.
        sha256 (str): The file's sha256.
        dataset (str): The training data.
        last (float): Test top-1 at the final epoch.
        max_test (float): The best test top-1 over the evaluated epochs.
        base (str): The base checkpoint's label.
        metafile (str): The metafile that lists it.
        trainable (int, optional): Trainable parameters, if known.
        token_blocks (list[int]): Token-selection blocks (0-based).
        overrides (list[str]): ``--cfg-options`` the run was trained with
            on top of the listed config (:func:`training_overrides`).
    """

    name: str
    run_dir: str
    file: str
    sha256: str
    dataset: str
    last: float
    max_test: float
    base: str
    metafile: str
    trainable: Optional[int] = None
    token_blocks: List[int] = field(default_factory=list)
    overrides: List[str] = field(default_factory=list)


def base_label(value: str) -> str:
    """The label of the base: a :data:`BASE_LABELS` key, or verbatim."""
    if not value or not value.strip():
        raise ValueError('base label is empty: name the pretrained base, '
                         f'e.g. one of {sorted(BASE_LABELS)}')
    return BASE_LABELS.get(value, value)


def find_checkpoint(run_dir: str) -> str:
    """The run's final checkpoint.

    ``last_checkpoint`` (written by ``CheckpointHook``) if it names an
    existing file, else the ``epoch_N.pth`` / ``iter_N.pth`` with the
    largest N.

    Raises:
        FileNotFoundError: naming the run dir and what was looked for.
    """
    pointer = osp.join(run_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            path = f.read().strip()
        if not osp.isabs(path):
            path = osp.join(run_dir, path)
        if osp.isfile(path):
            return path
    found = [(int(m.group(2)), name) for name in os.listdir(run_dir)
             if (m := _CHECKPOINT.match(name))]
    if not found:
        raise FileNotFoundError(
            f'{run_dir}: no checkpoint (no last_checkpoint pointing to a '
            'file, no epoch_N.pth / iter_N.pth); did the run save one?')
    return osp.join(run_dir, max(found)[1])


def _dumped_config(run_dir: str, source: Optional[str]) -> str:
    """The config the runner dumped into the run dir."""
    names = sorted(n for n in os.listdir(run_dir) if n.endswith('.py'))
    if source and osp.basename(source) in names:
        return osp.join(run_dir, osp.basename(source))
    if len(names) == 1:
        return osp.join(run_dir, names[0])
    raise FileNotFoundError(
        f'{run_dir}: expected the config the runner dumps into its work dir '
        f'(<config name>.py), found {names or "no .py file"}')


def training_overrides(record: dict) -> List[str]:
    """The ``--cfg-options`` a sweep passed, less the data roots.

    A run published under a repository config's name but trained with
    overrides (e.g. a larger budget) says so in its metafile entry.
    """
    command = list(record.get('command') or [])
    if '--cfg-options' not in command:
        return []
    options = command[command.index('--cfg-options') + 1:]
    return [
        o for o in options
        if '=' in o and not o.split('=', 1)[0].endswith('data_root')
    ]


def zoo_model_name(config: str, task: Optional[str], per_task: bool) -> str:
    """:func:`~.metafile.model_name`, plus ``-<task>`` if per task."""
    name = model_name(config)
    if per_task:
        if not task:
            raise ValueError(f'{config}: a per-task run without a task')
        name += f'-{task}'
    return name


def _dataset_name(run: RunResult) -> str:
    if run.benchmark == 'fgvc':
        return FGVC_DATASETS[run.task].title
    if run.benchmark == 'vtab1k':
        return f'VTAB-1k {run.task}'
    return run.task or 'unknown'


def _load_index(model_index: str) -> Dict[str, Tuple[str, dict]]:
    """Name -> (metafile path, entry) of every model in an index."""
    models = {}
    if not osp.isfile(model_index):
        return models
    with open(model_index) as f:
        imports = (yaml.safe_load(f) or {}).get('Import') or []
    for rel in imports:
        path = osp.join(osp.dirname(model_index), rel)
        with open(path) as f:
            for entry in (yaml.safe_load(f) or {}).get('Models') or []:
                models[entry['Name']] = (path, entry)
    return models


def _entry_fields(entry: ZooEntry) -> dict:
    metadata = {'Base checkpoint': entry.base}
    if entry.trainable is not None:
        metadata['Trainable parameters'] = entry.trainable
    if entry.token_blocks:
        metadata['Token selection blocks'] = list(entry.token_blocks)
    if entry.overrides:
        metadata['Training overrides'] = list(entry.overrides)
    results = [{
        'Task': 'Image Classification',
        'Dataset': entry.dataset,
        'Metrics': {
            METRIC_LAST: round(entry.last, 2),
            METRIC_MAX: round(entry.max_test, 2)
        }
    }]
    return dict(
        metadata=metadata, Results=results, Weights=ZOO_SCHEME + entry.file)


def _write_metafile(path: str, data: dict, header: str) -> None:
    with open(path, 'w') as f:
        f.write(header)
        yaml.safe_dump(data, f, sort_keys=False, width=79)


def _read_metafile(path: str) -> Tuple[str, dict]:
    """The metafile's leading comment lines and its data."""
    with open(path) as f:
        text = f.read()
    header = ''
    for line in text.splitlines():
        if not line.startswith('#'):
            break
        header += line + '\n'
    return header, yaml.safe_load(text) or {}


def results_table(models: Sequence[dict]) -> str:
    """The Markdown result table of a metafile's published models."""
    lines = [
        '| Model | Data | Base checkpoint | Top-1 last epoch (%) | '
        'Top-1 max test (%) | Trainable | Token blocks | Config | '
        'Checkpoint |', '| :--- | :--- | :--- | :---: | :---: | :---: | '
        ':---: | :---: | :--- |'
    ]
    published = [m for m in models if m.get('Weights')]
    for model in sorted(published, key=lambda m: m['Name']):
        meta = model.get('Metadata') or {}
        result = model['Results'][0]
        metrics = result['Metrics']
        blocks = meta.get('Token selection blocks')
        trainable = meta.get('Trainable parameters')
        lines.append(
            f"| `{model['Name']}` | {result['Dataset']} | "
            f"{meta.get('Base checkpoint', '-')} | "
            f'{metrics[METRIC_LAST]:.2f} | {metrics[METRIC_MAX]:.2f} | '
            f"{'-' if trainable is None else f'{trainable:,}'} | "
            f"{', '.join(map(str, blocks)) if blocks else '-'} | "
            f"`{model['Config']}` | "
            f"`{model['Weights'][len(ZOO_SCHEME):]}` |")
    if not published:
        lines.append('| (none published yet) | | | | | | | | |')
    return '\n'.join(lines)


def write_readme_table(readme: str, table: str) -> None:
    """Put ``table`` between the zoo markers of ``readme``.

    A README without the markers gets a ``## Published checkpoints``
    section with them at its end; a missing README is created.
    """
    block = f'{TABLE_BEGIN}\n{table}\n{TABLE_END}'
    text = ''
    if osp.isfile(readme):
        with open(readme) as f:
            text = f.read()
    if TABLE_BEGIN in text and TABLE_END in text:
        start = text.index(TABLE_BEGIN)
        end = text.index(TABLE_END) + len(TABLE_END)
        text = text[:start] + block + text[end:]
    else:
        text = (text.rstrip('\n') + '\n\n' if text else '') + (
            '## Published checkpoints\n\nWritten by '
            '`tools/misc/publish_zoo.py`; `Checkpoint` is the file to put '
            'in the zoo folder (`$MMTRPTS_ZOO` or `zoo/`).\n\n' + block + '\n')
    with open(readme, 'w') as f:
        f.write(text)


class _Publisher:
    """State of one :func:`publish` call."""

    def __init__(self, zoo_dir: str, base: str, label: str, model_index: str,
                 date: str, weights: str):
        self.zoo_dir = osp.abspath(zoo_dir)
        self.base_path = base
        self.label = base_label(label)
        self.date = date
        self.weights = weights
        self.index = _load_index(model_index)
        checkpoint = load_checkpoint_file(base, map_location='cpu')
        if is_delta(checkpoint):
            raise ValueError(f'{base} is a delta checkpoint; the base must '
                             'be the dense pretrained checkpoint')
        self.base_state = checkpoint.get('state_dict', checkpoint)
        self.base_sha256 = sha256_file(base)
        self.base_name = osp.basename(base)

    def place_base(self) -> Optional[str]:
        """Put the base beside the deltas (they name it by file name)."""
        target = osp.join(self.zoo_dir, self.base_name)
        if osp.isfile(target):
            if sha256_file(target) != self.base_sha256:
                raise ValueError(
                    f'{target} exists and differs from the base {self.base_path}'
                    '; the deltas name their base by file name: remove it '
                    'or rename the base')
            return None
        shutil.copyfile(self.base_path, target)
        return target

    def check_base(self, checkpoint: dict, path: str) -> None:
        recorded = (checkpoint.get('selection') or {}).get('base_checkpoint')
        if recorded and recorded.get('sha256') != self.base_sha256:
            raise ValueError(
                f'{path} was selected on {recorded.get("path")} (sha256 '
                f'{str(recorded.get("sha256"))[:12]}), not on the given '
                f'base {self.base_path} (sha256 {self.base_sha256[:12]})')

    def export(self, name: str,
               checkpoint_path: str) -> Tuple[str, str, List[int]]:
        """Write the run's delta into the zoo; (file, sha256, blocks)."""
        checkpoint = load_checkpoint_file(checkpoint_path, map_location='cpu')
        self.check_base(checkpoint, checkpoint_path)
        delta, state_dict, _ = export_checkpoint(
            checkpoint,
            checkpoint_path,
            base_state_dict=self.base_state,
            base_checkpoint=self.base_name,
            weights=self.weights)
        delta['meta']['zoo'] = dict(name=name, base_label=self.label)
        mask = state_dict.get(_TOKEN_MASK)
        blocks = [] if mask is None else mask.nonzero().flatten().tolist()
        fd, tmp = tempfile.mkstemp(suffix='.pth', dir=self.zoo_dir)
        os.close(fd)
        try:
            torch.save(delta, tmp)
            sha256 = sha256_file(tmp)
            file = zoo_file_name(name, sha256, self.date)
            os.replace(tmp, osp.join(self.zoo_dir, file))
        finally:
            if osp.exists(tmp):
                os.remove(tmp)
        return file, sha256, blocks


def _check_runs(runs: Sequence[Tuple[str, RunResult]],
                skip_incomplete: bool) -> Tuple[List, List[str]]:
    usable, left_out = [], []
    for run_dir, run in runs:
        if run.status == 'complete' and run.eval_split in (None, 'test'):
            usable.append((run_dir, run))
            continue
        why = (f'{run_dir}: {run.status}' +
               (f' (last evaluation at epoch {run.last[0]}/{run.max_epochs})'
                if run.last else '') +
               (f', evaluated on {run.eval_split}'
                if run.eval_split not in (None, 'test') else '') +
               (f'; {"; ".join(run.notes)}' if run.notes else ''))
        left_out.append(why)
    if left_out and not skip_incomplete:
        raise ValueError('not publishable (complete runs evaluated on test '
                         'only; --skip-incomplete leaves them out):\n  ' +
                         '\n  '.join(left_out))
    return usable, left_out


def publish(run_dirs: Sequence[str],
            zoo_dir: str,
            base: str,
            label: str,
            model_index: str,
            date: str,
            weights: str = 'state_dict',
            skip_incomplete: bool = False,
            log=print) -> Tuple[List[ZooEntry], List[str]]:
    """Publish run dirs into a zoo folder (see the module docstring).

    Args:
        run_dirs (Sequence[str]): The runs (``find_run_dirs`` of a sweep).
        zoo_dir (str): The zoo folder (created if missing).
        base (str): The pretrained base checkpoint of every run.
        label (str): Its label (:func:`base_label`).
        model_index (str): The model index whose metafiles are updated for
            the names they list (the repository's ``model-index.yml``).
        date (str): ``YYYYMMDD`` of the file names.
        weights (str): ``'state_dict'`` (EMA if any) or ``'raw'``.
        skip_incomplete (bool): Leave out runs that are not complete
            instead of refusing.
        log (callable): Where progress lines go.

    Returns:
        tuple: The published entries and the left-out runs with reasons.

    Raises:
        ValueError: an unusable run (without ``skip_incomplete``), two runs
            with one name, or a run trained from another base.
    """
    runs = [(d, read_run(d, osp.dirname(osp.abspath(d)))) for d in run_dirs]
    runs, left_out = _check_runs(runs, skip_incomplete)
    named = {}
    for run_dir, run in runs:
        record = read_sweep_record(run_dir) or {}
        source = record.get('config')
        dumped = _dumped_config(run_dir, source)
        per_task = record.get('benchmark') == 'mini-vtab'
        name = zoo_model_name(source or dumped, run.task, per_task)
        if name in named:
            raise ValueError(f'runs {named[name][0]} and {run_dir} are both '
                             f'{name}: publish one of them')
        named[name] = (run_dir, run, dumped, training_overrides(record))
    os.makedirs(zoo_dir, exist_ok=True)
    publisher = _Publisher(zoo_dir, base, label, model_index, date, weights)
    copied = publisher.place_base()
    if copied:
        log(f'copied the base to {copied} (the deltas name it by file name)')

    entries = []
    for name, (run_dir, run, dumped, overrides) in named.items():
        checkpoint = find_checkpoint(run_dir)
        file, sha256, blocks = publisher.export(name, checkpoint)
        listed = publisher.index.get(name)
        metafile = listed[0] if listed else osp.join(publisher.zoo_dir,
                                                     ZOO_METAFILE)
        entry = ZooEntry(
            name=name,
            run_dir=run_dir,
            file=file,
            sha256=sha256,
            dataset=(listed[1].get('Metadata', {}).get('Training Data')
                     if listed else None) or _dataset_name(run),
            last=run.last[1],
            max_test=run.max_test[1],
            base=publisher.label,
            metafile=metafile,
            trainable=(run.trainable or {}).get('params'),
            token_blocks=blocks,
            overrides=overrides if listed else [])
        entries.append((entry, dumped))
        log(f'{name}: {osp.relpath(checkpoint)} -> {file} (top-1 last '
            f'{entry.last:.2f}, max test {entry.max_test:.2f}'
            f'{", token blocks " + str(blocks) if blocks else ""})')
    _write_metafiles(entries, publisher.zoo_dir, log)
    return [e for e, _ in entries], left_out


def _write_metafiles(entries: Sequence[Tuple[ZooEntry, str]], zoo_dir: str,
                     log) -> None:
    by_file: Dict[str, List[Tuple[ZooEntry, str]]] = {}
    for entry, dumped in entries:
        by_file.setdefault(entry.metafile, []).append((entry, dumped))
    for path, group in by_file.items():
        local = osp.abspath(path) == osp.join(zoo_dir, ZOO_METAFILE)
        if osp.isfile(path):
            header, data = _read_metafile(path)
        else:
            header = ('# Written by tools/misc/publish_zoo.py: runs published '
                      'into this zoo folder.\n')
            data = dict(
                Collections=[dict(Name='mmtrpts zoo', README='README.md')],
                Models=[])
        models = {m['Name']: m for m in data.get('Models') or []}
        for entry, dumped in group:
            fields = _entry_fields(entry)
            model = models.get(entry.name)
            if model is None:
                config = osp.join('configs', f'{entry.name}.py')
                os.makedirs(osp.join(zoo_dir, 'configs'), exist_ok=True)
                shutil.copyfile(dumped, osp.join(zoo_dir, config))
                model = {
                    'Name': entry.name,
                    'Metadata': {
                        'Training Data': entry.dataset
                    },
                    'In Collection': 'mmtrpts zoo',
                    'Config': config
                }
                data.setdefault('Models', []).append(model)
                models[entry.name] = model
            model.setdefault('Metadata', {}).update(fields['metadata'])
            model['Results'] = fields['Results']
            model['Weights'] = fields['Weights']
        _write_metafile(path, data, header)
        log(f'updated {path} ({len(group)} entries)')
        if local:
            with open(osp.join(zoo_dir, ZOO_INDEX), 'w') as f:
                yaml.safe_dump({'Import': [ZOO_METAFILE]}, f)
        readme = osp.join(osp.dirname(path), 'README.md')
        write_readme_table(readme, results_table(data['Models']))
        log(f'wrote the result table of {readme}')
