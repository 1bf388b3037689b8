"""Pure-torch selection rules: TR-PTS, GPS, global top-k, calibration."""
from typing import Dict

import pytest
import torch

from mmtrpts.selection import (SelectionResult, as_matrix, block_groups,
                               budget_to_entries, calibrate_trpts,
                               rowwise_topk, select_global_topk, select_gps,
                               select_trpts, trpts_connections)


def _ref_rowwise(score2d: torch.Tensor, k: int) -> torch.Tensor:
    """Reference: stable descending sort per row (ties: lower column)."""
    cols = score2d.shape[1]
    k = max(0, min(k, cols))
    order = torch.sort(score2d, dim=1, descending=True, stable=True).indices
    rows = torch.arange(score2d.shape[0]).unsqueeze(1)
    flat = (rows * cols + order[:, :k]).reshape(-1)
    return torch.sort(flat).values


def _hand_scores() -> Dict[str, torch.Tensor]:
    """Four matrices with a hand-checkable TR-PTS allocation.

    N = 16 + 32 + 16 + 24 = 88; M = 9% gives k = ceil(7.92) = 8. The 8
    largest scores are a: 40, 30, 20, 10; b: 50, 25; c: 45, 5 (so t = 5);
    every other score is < 1. Densities 4/16, 2/32, 2/16, 0/24.
    """
    a = torch.tensor([[40, .11, 30, .12, .13, .14, .15, .16],
                      [.21, 20, .22, .23, 10, .24, .25, .26]])
    b = ((torch.arange(32) % 5 + 1) / 10).reshape(4, 8)
    b[0, 3], b[2, 5] = 50., 25.
    c = torch.tensor([[.1, .2, 45, .3, .9, .4, .5, .6],
                      [.7, .1, .1, .2, .3, .3, .1, 5]]).reshape(2, 2, 2, 2)
    d = torch.full((3, 8), .01)
    return dict(a=a, b=b, c=c, d=d)


def _conns(layers: dict) -> Dict[str, int]:
    return {name: info['c'] for name, info in layers.items()}


def _toy_vit_shapes(blocks: int = 4, dim: int = 32) -> Dict[str, tuple]:
    shapes = {'patch_embed.projection.weight': (dim, 3, 4, 4)}
    for i in range(blocks):
        shapes.update({
            f'layers.{i}.attn.qkv.weight': (3 * dim, dim),
            f'layers.{i}.attn.proj.weight': (dim, dim),
            f'layers.{i}.ffn.layers.0.0.weight': (4 * dim, dim),
            f'layers.{i}.ffn.layers.1.weight': (dim, 4 * dim),
        })
    return shapes


def _random_scores(shapes: Dict[str, tuple],
                   seed: int = 0) -> Dict[str, torch.Tensor]:
    """Heavy-tailed scores with a different scale per matrix."""
    gen = torch.Generator().manual_seed(seed)
    return {
        name: torch.rand(shape, generator=gen).pow(3) * (1 + i % 5)
        for i, (name, shape) in enumerate(shapes.items())
    }


def _check_rowwise(result: SelectionResult,
                   scores: Dict[str, torch.Tensor]) -> None:
    """Exactly c entries per row, and they are the row's top-c."""
    for name, s in scores.items():
        info = result.layers[name]
        idx = result.indices[name]
        assert idx.dtype == torch.int64
        assert idx.numel() == info['c'] * info['rows'] == info['selected']
        per_row = torch.bincount(idx // info['cols'], minlength=info['rows'])
        assert bool((per_row == info['c']).all())
        assert torch.equal(idx, _ref_rowwise(as_matrix(s), info['c']))
    assert result.num_selected == sum(i['c'] * i['rows']
                                      for i in result.layers.values())


# --------------------------------------------------------------------------
# as_matrix / rowwise_topk
# --------------------------------------------------------------------------
def test_as_matrix():
    conv = torch.arange(2 * 3 * 2 * 2.).reshape(2, 3, 2, 2)
    mat = as_matrix(conv)
    assert mat.shape == (2, 12)
    assert mat.data_ptr() == conv.data_ptr()  # a view
    assert torch.equal(mat.reshape(-1), conv.view(-1))
    with pytest.raises(ValueError, match=r'\(5,\)'):
        as_matrix(torch.zeros(5))


def test_rowwise_topk_exact_with_ties():
    m = torch.tensor([[3., 1, 3, 2], [0, 5, 5, 5], [1, 1, 1, 1]])
    assert rowwise_topk(m, 1).tolist() == [0, 5, 8]
    assert rowwise_topk(m, 2).tolist() == [0, 2, 5, 6, 8, 9]
    assert rowwise_topk(m, 3).tolist() == [0, 2, 3, 5, 6, 7, 8, 9, 10]
    empty = rowwise_topk(m, 0)
    assert empty.numel() == 0 and empty.dtype == torch.int64
    assert rowwise_topk(m, 10).tolist() == list(range(12))
    assert rowwise_topk(m, 2).dtype == torch.int64
    with pytest.raises(ValueError):
        rowwise_topk(torch.zeros(4), 1)
    with pytest.raises(ValueError, match='NaN'):
        rowwise_topk(torch.tensor([[1., float('nan')]]), 1)


@pytest.mark.parametrize('k', [1, 2, 7, 63, 64, 65, 99, 100])
def test_rowwise_topk_matches_stable_sort(k):
    gen = torch.Generator().manual_seed(k)
    m = torch.randint(0, 4, (6, 100), generator=gen).float()
    assert torch.equal(rowwise_topk(m, k), _ref_rowwise(m, k))
    m = torch.rand(5, 100, generator=gen)
    assert torch.equal(rowwise_topk(m, k), _ref_rowwise(m, k))


# --------------------------------------------------------------------------
# TR-PTS
# --------------------------------------------------------------------------
def test_trpts_hand_computed():
    scores = _hand_scores()
    result = select_trpts(scores, 9)
    settings, layers = result.settings, result.layers
    assert settings['topset_size'] == 8
    assert settings['threshold'] == 5.0
    assert settings['w_min'] == 2 / 32
    assert {
        n: i['top_count']
        for n, i in layers.items()
    } == dict(
        a=4, b=2, c=2, d=0)
    assert {
        n: i['top_density']
        for n, i in layers.items()
    } == dict(
        a=.25, b=.0625, c=.125, d=0.)
    assert _conns(layers) == dict(a=4, b=1, c=2, d=1)
    assert result.num_selected == 4 * 2 + 1 * 4 + 2 * 2 + 1 * 3 == 19
    assert settings['num_selected'] == 19
    assert settings['num_entries'] == 88 and settings['num_rows'] == 11
    assert result.indices['a'].tolist() == [0, 2, 6, 7, 9, 12, 14, 15]
    assert result.indices['b'].tolist() == [3, 9, 21, 24]  # ties: low col
    assert result.indices['c'].tolist() == [2, 4, 8, 15]
    assert result.indices['d'].tolist() == [0, 8, 16]
    assert layers['c']['shape'] == [2, 2, 2, 2]
    assert (layers['c']['rows'], layers['c']['cols']) == (2, 8)
    assert layers['a']['density'] == 8 / 16
    _check_rowwise(result, scores)
    assert layers == trpts_connections(scores, 9)


def test_trpts_conv_indices_index_param_view():
    scores = _hand_scores()
    result = select_trpts(scores, 9)
    idx = result.indices['c']
    assert scores['c'].view(-1)[idx].tolist() == pytest.approx([45, .9, .7, 5])
    mask = result.mask('c')
    assert mask.shape == (2, 2, 2, 2) and int(mask.sum()) == 4
    assert bool(mask[0, 0, 1, 0]) and bool(mask[1, 1, 1, 1])
    param = torch.randn(2, 2, 2, 2)
    assert torch.equal(param.view(-1)[idx], param[mask])


@pytest.mark.parametrize('rounding,expected', [
    ('round', dict(a=5, b=1, c=3, d=1)),
    ('floor', dict(a=5, b=1, c=2, d=1)),
    ('ceil', dict(a=5, b=2, c=3, d=1)),
])
def test_trpts_rounding(rounding, expected):
    # ratios 4, 1, 2 times c_min = 1.25 -> 5, 1.25, 2.5; d has w = 0
    scores = _hand_scores()
    result = select_trpts(scores, 9, c_min=1.25, rounding=rounding)
    assert _conns(result.layers) == expected
    _check_rowwise(result, scores)


def test_trpts_c_min_half_up_and_floor_at_one():
    scores = _hand_scores()
    # c_min = 0.5: 2, 0.5 -> 1 (half up), 1
    layers = trpts_connections(scores, 9, c_min=0.5)
    assert _conns(layers) == dict(a=2, b=1, c=1, d=1)
    # floor gives 0 for b, lifted to the floor of 1
    layers = trpts_connections(scores, 9, c_min=0.5, rounding='floor')
    assert _conns(layers) == dict(a=2, b=1, c=1, d=1)


def test_trpts_clips_to_cols_and_c_max():
    scores = _hand_scores()
    assert _conns(trpts_connections(scores, 9, c_min=3)) == dict(
        a=8, b=3, c=6, d=1)
    result = select_trpts(scores, 9, c_max=3)
    assert _conns(result.layers) == dict(a=3, b=1, c=2, d=1)
    assert result.settings['c_max'] == 3
    _check_rowwise(result, scores)


def test_trpts_weight_variants():
    scores = _hand_scores()
    # count: n = 4, 2, 2 -> ratios 2, 1, 1
    layers = trpts_connections(scores, 9, weight='count')
    assert _conns(layers) == dict(a=2, b=1, c=1, d=1)
    assert layers['a']['w'] == 4.
    # sum: 100, 75, 50 -> ratios 2, 1.5 (half up: 2), 1
    layers = trpts_connections(scores, 9, weight='sum')
    assert _conns(layers) == dict(a=2, b=2, c=1, d=1)
    assert layers['b']['w'] == 75.
    layers = trpts_connections(scores, 9, weight='sum', rounding='floor')
    assert _conns(layers) == dict(a=2, b=1, c=1, d=1)


def test_trpts_groups_share_c():
    scores = _hand_scores()
    groups = dict(a=0, b=0, c=1, d=1)
    # group 0: 6 / 48 = .125; group 1: 2 / 40 = .05 -> ratio 2.5 -> 3, 1
    result = select_trpts(scores, 9, groups=groups)
    assert _conns(result.layers) == dict(a=3, b=3, c=1, d=1)
    assert result.layers['a']['group'] == 0
    assert result.layers['a']['w'] == .125
    assert result.settings['groups'] == groups
    _check_rowwise(result, scores)
    # partial groups: c and d stay units of their own (d has w = 0)
    layers = trpts_connections(scores, 9, groups=dict(a=0, b=0))
    assert _conns(layers) == dict(a=1, b=1, c=1, d=1)


def test_block_groups():
    names = list(_toy_vit_shapes(blocks=2))
    groups = block_groups(names)
    assert 'patch_embed.projection.weight' not in groups
    assert groups['layers.1.ffn.layers.1.weight'] == 'block1'
    assert sorted(set(groups.values())) == ['block0', 'block1']


def test_trpts_zero_density_and_all_ties():
    scores = dict(x=torch.ones(3, 4), y=torch.zeros(2, 5))
    layers = trpts_connections(scores, 10)  # k = 3: t = 1, y has w = 0
    assert _conns(layers) == dict(x=1, y=1)
    assert layers['y']['top_count'] == 0
    result = select_trpts(scores, 10, c_min=2)
    assert _conns(result.layers) == dict(x=2, y=1)
    assert result.indices['x'].tolist() == [0, 1, 4, 5, 8, 9]
    assert result.indices['y'].tolist() == [0, 5]


@pytest.mark.parametrize('kwargs,match', [
    (dict(m_percent=0), 'm_percent'),
    (dict(m_percent=100.5), 'm_percent'),
    (dict(m_percent=1, c_min=0), 'c_min'),
    (dict(m_percent=1, c_min=-1), 'c_min'),
    (dict(m_percent=1, c_max=0), 'c_max'),
    (dict(m_percent=1, c_max=1.5), 'c_max'),
    (dict(m_percent=1, weight='mean'), "'mean'"),
    (dict(m_percent=1, rounding='bankers'), "'bankers'"),
    (dict(m_percent=1, groups=dict(zz=0)), 'zz'),
])
def test_trpts_invalid_args(kwargs, match):
    with pytest.raises(ValueError, match=match):
        select_trpts(_hand_scores(), **kwargs)


@pytest.mark.parametrize('bad,match', [
    (dict(w=torch.ones(4)), r'\(4,\)'),
    (dict(w=-torch.ones(2, 2)), 'non-negative'),
    (dict(w=torch.tensor([[1., float('nan')]])), 'non-negative'),
    (dict(w=torch.tensor([[1., float('inf')]])), 'finite'),
    (dict(w=torch.ones(2, 2, dtype=torch.int64)), 'dtype'),
    ({}, 'non-empty'),
])
def test_invalid_scores(bad, match):
    with pytest.raises(ValueError, match=match):
        select_trpts(bad, 1)


# --------------------------------------------------------------------------
# GPS and global top-k
# --------------------------------------------------------------------------
def test_gps_uniform_k():
    scores = _hand_scores()
    result = select_gps(scores, 3)
    assert _conns(result.layers) == dict(a=3, b=3, c=3, d=3)
    assert result.num_selected == 3 * 11
    assert result.settings['rule'] == 'gps' and result.settings['k'] == 3
    _check_rowwise(result, scores)
    full = select_gps(scores, 100)
    assert _conns(full.layers) == dict(a=8, b=8, c=8, d=8)
    assert full.num_selected == 88
    with pytest.raises(ValueError, match='k must'):
        select_gps(scores, 0)


def test_global_topk_exact():
    scores = _hand_scores()
    result = select_global_topk(scores, num=8)
    assert result.num_selected == 8
    assert result.indices['a'].tolist() == [0, 2, 9, 12]
    assert result.indices['b'].tolist() == [3, 21]
    assert result.indices['c'].tolist() == [2, 15]
    assert result.indices['d'].tolist() == []
    assert result.layers['a']['c'] is None
    assert result.settings['threshold'] == 5.0
    quarter = select_global_topk(scores, fraction=.25)
    assert quarter.num_selected == 22
    big = torch.cat([scores[n].view(-1)[quarter.indices[n]] for n in scores])
    rest = torch.cat(
        [scores[n].view(-1)[~quarter.mask(n).view(-1)] for n in scores])
    assert float(big.min()) >= float(rest.max())


def test_global_topk_ties_by_layer_then_index():
    scores = dict(x=torch.ones(2, 4), y=torch.ones(3, 4))
    result = select_global_topk(scores, num=10)
    assert result.indices['x'].tolist() == list(range(8))
    assert result.indices['y'].tolist() == [0, 1]
    again = select_global_topk(scores, num=10)
    assert all(
        torch.equal(result.indices[n], again.indices[n]) for n in scores)
    with pytest.raises(ValueError, match='exactly one'):
        select_global_topk(scores)
    with pytest.raises(ValueError, match='exactly one'):
        select_global_topk(scores, num=1, fraction=.1)
    with pytest.raises(ValueError, match='num'):
        select_global_topk(scores, num=21)


# --------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------
@pytest.mark.parametrize('target', [1250, 2000, 3000, 5000, 12000])
def test_calibrate_hits_targets(target):
    scores = _random_scores(_toy_vit_shapes())
    result = calibrate_trpts(scores, target)
    s = result.settings
    assert abs(result.num_selected - target) <= .05 * target
    assert s['target_entries'] == target
    assert s['realised_entries'] == result.num_selected
    assert s['predicted_entries'] == result.num_selected
    assert s['relative_error'] == (result.num_selected - target) / target
    assert s['within_tolerance'] is True
    assert s['calibration'] in ('grid', 'refined', 'c_min-bisection')
    _check_rowwise(result, scores)
    # the recorded settings reproduce the selection
    again = select_trpts(scores, s['m_percent'], s['c_min'])
    assert again.layers == result.layers
    assert all(
        torch.equal(again.indices[n], result.indices[n]) for n in scores)


@pytest.mark.parametrize('kwargs', [
    dict(weight='sum'),
    dict(weight='count', rounding='floor'),
    dict(c_max=4),
    dict(groups='blocks')
])
def test_calibrate_with_options(kwargs):
    scores = _random_scores(_toy_vit_shapes(), seed=1)
    if kwargs.get('groups') == 'blocks':
        kwargs = dict(groups=block_groups(list(scores)))
    result = calibrate_trpts(scores, 2500, **kwargs)
    assert abs(result.num_selected - 2500) <= .05 * 2500
    assert result.settings['predicted_entries'] == result.num_selected
    for key, value in kwargs.items():
        assert result.settings[key] == value
    _check_rowwise(result, scores)


def test_calibrate_c_min_bisection():
    # equal scores: every w_l = 1, so C_l = round(c_min) for every M and
    # the M grid alone is stuck at one entry per row (1184 entries)
    scores = {n: torch.ones(s) for n, s in _toy_vit_shapes().items()}
    result = calibrate_trpts(scores, 3 * 1184)
    s = result.settings
    assert s['calibration'] == 'c_min-bisection'
    assert result.num_selected == 3 * 1184
    assert s['c_min'] == 3.0
    assert s['relative_error'] == 0.0
    _check_rowwise(result, scores)
    # and a target strictly between two realisable counts
    result = calibrate_trpts(scores, 3 * 1184 + 500, tolerance=.2)
    assert result.settings['calibration'] == 'c_min-bisection'
    assert result.num_selected in (3 * 1184, 4 * 1184)


def test_calibrate_warns_when_tolerance_missed():
    scores = {n: torch.ones(s) for n, s in _toy_vit_shapes().items()}
    with pytest.warns(UserWarning, match='tolerance'):
        result = calibrate_trpts(scores, 3 * 1184 + 500)
    assert result.settings['within_tolerance'] is False
    assert result.num_selected == 3 * 1184  # the closer of 3552 / 4736


def test_calibrate_unreachable_and_invalid():
    scores = _random_scores(_toy_vit_shapes())
    rows, total = 1184, 50688
    for target in (rows - 1, total + 1):
        with pytest.raises(ValueError, match=r'\[1184, 50688\]'):
            calibrate_trpts(scores, target)
    with pytest.raises(ValueError, match=r'\[1184, 2368\]'):
        calibrate_trpts(scores, 3000, c_max=2)
    assert calibrate_trpts(scores, rows).num_selected == rows
    with pytest.raises(ValueError, match='unexpected'):
        calibrate_trpts(scores, 2000, m_percent=1)
    with pytest.raises(ValueError, match='target_entries'):
        calibrate_trpts(scores, 0)
    with pytest.raises(ValueError, match='m_range'):
        calibrate_trpts(scores, 2000, m_range=(0, 5))


def test_budget_to_entries():
    # 0.34% of the ViT-B/16 backbone minus biases and a 50-class head
    fixed = 83712 + 50 * 768 + 50
    assert budget_to_entries(.0034, 85798656, fixed) == 169553
    assert budget_to_entries(.5, 10, 2) == 3
    with pytest.raises(ValueError, match='1000'):
        budget_to_entries(.001, 1000, 5)


# --------------------------------------------------------------------------
# Serialisation
# --------------------------------------------------------------------------
def _results():
    scores = _random_scores(_toy_vit_shapes())
    groups = block_groups(list(scores))
    return [
        calibrate_trpts(scores, 3000, groups=groups),
        select_trpts(_hand_scores(), 9, c_max=3),
        select_gps(scores, 2),
        select_global_topk(scores, fraction=.01),
    ]


def test_to_dict_round_trip(tmp_path):
    for i, result in enumerate(_results()):
        data = result.to_dict()
        assert all(t.dtype == torch.int32 for t in data['indices'].values())
        path = str(tmp_path / f'sel{i}.pth')
        torch.save(data, path)
        loaded = torch.load(path, weights_only=True)
        back = SelectionResult.from_dict(loaded)
        assert list(back.indices) == list(result.indices)
        for name, idx in result.indices.items():
            assert back.indices[name].dtype == torch.int64
            assert torch.equal(back.indices[name], idx)
        assert back.layers == result.layers
        assert back.settings == result.settings
        assert back.num_selected == result.num_selected


def _corrupt(data: dict, how: str) -> dict:
    data = dict(
        data,
        indices=dict(data['indices']),
        layers={
            n: dict(i)
            for n, i in data['layers'].items()
        })
    if how == 'format':
        data['format'] = 'other'
    elif how == 'no-settings':
        del data['settings']
    elif how == 'float-indices':
        data['indices']['a'] = data['indices']['a'].float()
    elif how == 'out-of-range':
        data['indices']['a'] = data['indices']['a'] + 100
    elif how == 'unsorted':
        data['indices']['a'] = data['indices']['a'].flip(0)
    elif how == 'count':
        data['layers']['a']['selected'] += 1
    elif how == 'shape':
        data['layers']['a']['shape'] = [3, 8]
    elif how == 'names':
        del data['indices']['a']
    return data


@pytest.mark.parametrize('how,match', [('format', 'format'),
                                       ('no-settings', 'settings'),
                                       ('float-indices', 'int32/int64'),
                                       ('out-of-range', 'out of range'),
                                       ('unsorted', 'ascending'),
                                       ('count', 'selected'),
                                       ('shape', 'shape'),
                                       ('names', 'different matrices')])
def test_from_dict_rejects_malformed(how, match):
    data = select_trpts(_hand_scores(), 9).to_dict()
    with pytest.raises(ValueError, match=match):
        SelectionResult.from_dict(_corrupt(data, how))
    with pytest.raises(ValueError, match='dict'):
        SelectionResult.from_dict([1, 2])


# --------------------------------------------------------------------------
# Scale
# --------------------------------------------------------------------------
def _vit_b_shapes(blocks: int) -> Dict[str, tuple]:
    shapes = {}
    for i in range(blocks):
        shapes.update({
            f'layers.{i}.attn.qkv.weight': (2304, 768),
            f'layers.{i}.attn.proj.weight': (768, 768),
            f'layers.{i}.ffn.layers.0.0.weight': (3072, 768),
            f'layers.{i}.ffn.layers.1.weight': (768, 3072),
        })
    shapes['patch_embed.projection.weight'] = (768, 3, 16, 16)
    return shapes


def test_calibrate_vit_b_scale():
    """All 49 ViT-B/16 matrices (85,524,480 entries, 342 MB of fp32).

    Not timed; about 2 s on 2 CPU cores (~1.5 GB peak memory).
    """
    shapes = _vit_b_shapes(12)
    gen = torch.Generator().manual_seed(0)
    scores = {
        n: torch.rand(s, generator=gen).pow(6) * (1 + i % 7)
        for i, (n, s) in enumerate(shapes.items())
    }
    assert sum(s.numel() for s in scores.values()) == 85524480
    rows = sum(s[0] for s in shapes.values())
    assert rows == 83712
    # 0.34% of the backbone, minus biases and a 50-class head
    # (docs/methods/trpts.md §4)
    target = budget_to_entries(.0034, 85798656, 83712 + 50 * 769)
    result = calibrate_trpts(scores, target)
    assert abs(result.num_selected - target) <= .05 * target
    assert result.settings['predicted_entries'] == result.num_selected
    assert result.num_selected == sum(i['c'] * i['rows']
                                      for i in result.layers.values())
    for name, info in result.layers.items():
        idx = result.indices[name]
        assert idx.numel() == info['c'] * info['rows']
        per_row = torch.bincount(idx // info['cols'], minlength=info['rows'])
        assert bool((per_row == info['c']).all())
