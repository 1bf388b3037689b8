"""Token keep/fuse maps and their object faithfulness; selection densities."""
from .selection_density import plot_selection_density
from .token_selection import (FusedObjectShare, draw_token_grid,
                              fused_object_share, patch_object_coverage,
                              patch_states, render_states)

__all__ = [
    'FusedObjectShare', 'draw_token_grid', 'fused_object_share',
    'patch_object_coverage', 'patch_states', 'plot_selection_density',
    'render_states'
]
