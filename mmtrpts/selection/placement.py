"""Parameter-token co-selection: where token selection goes (pure).

TR-PTS (ICCV 2025) observes that blocks with sparser selected parameters
encode less informative tokens, so token reduction is placed in the
parameter-sparse blocks (docs/methods/trpts.md §7).  The density of block b is
``d_b = sum_l selected_l / sum_l numel_l`` over its masked matrices (the
patch embedding is not a block).
"""
import random
import re
from typing import Dict, List, Mapping, Optional, Sequence

PLACEMENTS = ('sparse', 'dense', 'random', 'explicit')


def block_densities(layers: Mapping[str, dict],
                    pattern: str = r'(?:^|\.)layers\.(\d+)\.'
                    ) -> Dict[int, float]:
    """Selected-parameter density of every block.

    Args:
        layers (Mapping): Per-matrix allocation of a selection record
            (``selected`` and ``numel`` per parameter name).
        pattern (str): Regex whose first group is the block index.

    Returns:
        dict: block index -> density, ascending by block.
    """
    selected: Dict[int, int] = {}
    numel: Dict[int, int] = {}
    for name, info in layers.items():
        match = re.search(pattern, name)
        if match is None:
            continue
        block = int(match.group(1))
        selected[block] = selected.get(block, 0) + int(info['selected'])
        numel[block] = numel.get(block, 0) + int(info['numel'])
    if not numel:
        raise ValueError(f'no selected matrix matches the block pattern '
                         f'{pattern!r}')
    return {b: selected[b] / numel[b] for b in sorted(numel)}


def choose_blocks(densities: Mapping[int, float], mode: str = 'sparse',
                  num_blocks: int = 3, seed: int = 0,
                  blocks: Optional[Sequence[int]] = None) -> List[int]:
    """Pick the token-selection blocks.

    Args:
        densities (Mapping[int, float]): From :func:`block_densities`.
        mode (str): ``'sparse'`` (the ``num_blocks`` lowest densities; the
            TR-PTS default), ``'dense'`` (highest), ``'random'`` (seeded,
            uniform) or ``'explicit'`` (``blocks``).  Ties go to the lower
            block index.
        num_blocks (int): How many blocks (not for ``'explicit'``).
        seed (int): Seed of ``'random'``.
        blocks (Sequence[int], optional): The blocks of ``'explicit'``.

    Returns:
        List[int]: Chosen blocks in depth order.
    """
    if mode not in PLACEMENTS:
        raise ValueError(f'placement mode must be one of {PLACEMENTS}, got '
                         f'{mode!r}')
    if mode == 'explicit':
        if not blocks:
            raise ValueError("placement mode 'explicit' needs blocks")
        unknown = sorted(set(blocks) - set(densities))
        if unknown:
            raise ValueError(f'blocks {unknown} do not exist (blocks: '
                             f'{sorted(densities)})')
        return sorted(set(int(b) for b in blocks))
    if not 1 <= num_blocks <= len(densities):
        raise ValueError(f'num_blocks must be in [1, {len(densities)}], got '
                         f'{num_blocks}')
    if mode == 'random':
        return sorted(random.Random(seed).sample(sorted(densities),
                                                 num_blocks))
    sign = 1 if mode == 'sparse' else -1
    ranked = sorted(densities, key=lambda b: (sign * densities[b], b))
    return sorted(ranked[:num_blocks])
