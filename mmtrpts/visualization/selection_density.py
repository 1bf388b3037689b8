"""Per-matrix density plot of a selection record."""
from ..selection.report import layer_rows

_COLOURS = dict(
    qkv='tab:blue',
    proj='tab:orange',
    fc1='tab:green',
    fc2='tab:red',
    patch='tab:purple',
    other='tab:gray')


def plot_selection_density(record: dict, out_file: str) -> None:
    """Bar chart: selected density per matrix, coloured by matrix kind."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = layer_rows(record)
    kinds = [r['short'].split('.')[-1] for r in rows]
    fig = Figure(figsize=(max(6, 0.28 * len(rows)), 3.6))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.bar(
        range(len(rows)), [100 * r['density'] for r in rows],
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
    # Kinds without a colour of their own (Swin, ConvNeXt, ...) are 'other'.
    shown = {k if k in _COLOURS else 'other' for k in kinds}
    for kind, colour in _COLOURS.items():
        if kind in shown:
            ax.bar(0, 0, color=colour, label=kind)
    ax.legend(fontsize=7, ncol=6, loc='upper right')
    fig.tight_layout()
    fig.savefig(out_file, dpi=120)
