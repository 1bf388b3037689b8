"""Human-readable summaries of a selection record: log table and JSON.

The per-matrix density plot is drawn by
:func:`mmtrpts.visualization.plot_selection_density`.
"""
import json
import os
import os.path as osp
import re
from typing import Dict, List

_KINDS = (('attn.qkv', 'qkv'), ('attn.proj', 'proj'),
          ('ffn.layers.0', 'fc1'), ('ffn.layers.1', 'fc2'),
          ('patch_embed', 'patch'))


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


def write_summary(record: dict, out_dir: str) -> Dict:
    """Write ``selection.json``: settings, budget, Fisher pass, per matrix.

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
    return paths
