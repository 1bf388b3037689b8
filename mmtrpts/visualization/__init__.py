"""Pictures: token keep/fuse maps and per-matrix selection densities."""
from .selection_density import plot_selection_density
from .token_selection import draw_token_grid, patch_states, render_states

__all__ = [
    'draw_token_grid', 'patch_states', 'plot_selection_density',
    'render_states'
]
