"""Human-readable summaries of a selection record: table, JSON, plot."""
import json
import os
import os.path as osp
import re
from typing import Dict, List

_KINDS = (('attn.qkv', 'qkv'), ('attn.proj', 'proj'),
          ('ffn.layers.0', 'fc1'), ('ffn.layers.1', 'fc2'),
          ('patch_embed', 'patch'))
_COLOURS = dict(qkv='tab:blue', proj='tab:orange', fc1='tab:green',
                fc2='tab:red', patch='tab:purple', other='tab:gray')


def short_name(name: str) -> str:
    """``backbone.layers.3.attn.qkv.weight`` -> ``3.qkv``."""
    kind = next((k for key, k in _KINDS if key in name), None)
    block = re.search(r'layers\.(\d+)\.', name)
    if kind is None:
        return re.sub(r'^backbone\.|\.weight$', '', name)
    return f'{block.group(1)}.{kind}' if block else kind


def layer_rows(record: dict) -> List[Dict]:
    """One row per masked matrix, in layer order."""
    rows = []
    for name, info in record['layers'].items():
        rows.append(
            dict(name=name, short=short_name(name), rows=info['rows'],
                 cols=info['cols'], connections_per_neuron=info.get('c'),
                 selected=info['selected'], density=info['density'],
                 fisher_top_density=info.get('top_density')))
    return rows


def format_layer_table(record: dict) -> str:
    """A fixed-width table of the per-matrix allocation for the log."""
    lines = [f'{"matrix":<10} {"rows x cols":>13} {"C":>5} {"selected":>10} '
             f'{"density":>8}']
    for row in layer_rows(record):
        c = row['connections_per_neuron']
        lines.append(
            f'{row["short"]:<10} {row["rows"]:>6}x{row["cols"]:<6} '
            f'{"-" if c is None else c:>5} {row["selected"]:>10,} '
            f'{100 * row["density"]:>7.3f}%')
    return '\n'.join(lines)


def write_summary(record: dict, out_dir: str, plot: bool = True) -> Dict:
    """Write ``selection.json`` (and ``selection_density.png``).

    Returns:
        dict: paths written.
    """
    os.makedirs(out_dir, exist_ok=True)
    summary = dict(
        settings=record.get('settings'), budget=record.get('budget'),
        fisher=record.get('fisher'), checksum=record['checksum'],
        full=record['full'], layers=layer_rows(record))
    paths = dict(json=osp.join(out_dir, 'selection.json'))
    with open(paths['json'], 'w') as f:
        json.dump(summary, f, indent=1, default=str)
    if plot:
        paths['png'] = osp.join(out_dir, 'selection_density.png')
        plot_density(record, paths['png'])
    return paths


def plot_density(record: dict, out_file: str) -> None:
    """Bar chart: selected density per matrix, coloured by matrix kind."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    rows = layer_rows(record)
    kinds = [r['short'].split('.')[-1] for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 0.28 * len(rows)), 3.6))
    ax.bar(range(len(rows)), [100 * r['density'] for r in rows],
           color=[_COLOURS.get(k, _COLOURS['other']) for k in kinds])
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r['short'] for r in rows], rotation=90, fontsize=7)
    ax.set_ylabel('selected entries (%)')
    budget = record.get('budget') or {}
    settings = record.get('settings') or {}
    title = f'{settings.get("rule", "selection")}: per-matrix density'
    if budget.get('realized_ratio') is not None:
        title += f' (trainable {100 * budget["realized_ratio"]:.3f}%)'
    ax.set_title(title, fontsize=9)
    for kind, colour in _COLOURS.items():
        if kind in kinds:
            ax.bar(0, 0, color=colour, label=kind)
    ax.legend(fontsize=7, ncol=6, loc='upper right')
    fig.tight_layout()
    fig.savefig(out_file, dpi=120)
    plt.close(fig)
