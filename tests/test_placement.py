"""Parameter-token co-selection: block densities and placement modes."""
import pytest

from mmtrpts.selection.placement import block_densities, choose_blocks

LAYERS = {
    'backbone.patch_embed.projection.weight': dict(selected=50, numel=100),
    'backbone.layers.0.attn.qkv.weight': dict(selected=30, numel=100),
    'backbone.layers.0.ffn.layers.1.weight': dict(selected=10, numel=100),
    'backbone.layers.1.attn.qkv.weight': dict(selected=5, numel=100),
    'backbone.layers.2.attn.qkv.weight': dict(selected=5, numel=100),
    'backbone.layers.3.attn.qkv.weight': dict(selected=60, numel=200),
}


def test_block_densities_pool_the_matrices_of_a_block():
    assert block_densities(LAYERS) == {0: 0.2, 1: 0.05, 2: 0.05, 3: 0.3}
    with pytest.raises(ValueError, match='block pattern'):
        block_densities({'head.fc.weight': dict(selected=1, numel=2)})


def test_choose_blocks_modes_and_ties():
    densities = block_densities(LAYERS)
    assert choose_blocks(densities, 'sparse', 2) == [1, 2]
    assert choose_blocks(densities, 'sparse', 3) == [0, 1, 2]
    assert choose_blocks(densities, 'dense', 1) == [3]
    assert choose_blocks(densities, 'dense', 2) == [0, 3]
    tie = {0: 0.1, 1: 0.1, 2: 0.1}
    assert choose_blocks(tie, 'sparse', 2) == [0, 1]  # lower index wins
    first = choose_blocks(densities, 'random', 2, seed=3)
    assert first == choose_blocks(densities, 'random', 2, seed=3)
    assert len(set(first)) == 2 and set(first) <= set(densities)
    assert choose_blocks(densities, 'explicit', blocks=[3, 1]) == [1, 3]
    with pytest.raises(ValueError, match=r'blocks \[7\] do not exist'):
        choose_blocks(densities, 'explicit', blocks=[7])
    with pytest.raises(ValueError, match='num_blocks'):
        choose_blocks(densities, 'sparse', 5)
    with pytest.raises(ValueError, match="'middle'"):
        choose_blocks(densities, 'middle')
