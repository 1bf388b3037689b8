"""SPT's allocation rule (pure torch): thresholds, classification, sweep."""
from typing import Dict

import pytest
import torch

from mmtrpts.selection.spt_allocation import (allocate_spt, spt_units,
                                              trainable_indices,
                                              unit_threshold,
                                              validate_allocation)

D, H = 768, 3072  # ViT-B/16
BLOCK0 = {
    'layers.0.ln1.weight': [D],
    'layers.0.attn.qkv.weight': [3 * D, D],
    'layers.0.attn.qkv.bias': [3 * D],
    'layers.0.attn.proj.weight': [D, D],
    'layers.0.ffn.layers.0.0.weight': [H, D],
    'layers.0.ffn.layers.0.0.bias': [H],
    'layers.0.ffn.layers.1.weight': [D, H],
}
# (q/k/v/proj, fc1, fc2) thresholds and module sizes of docs/methods/spt.md
# §1's table.
SPEC = {
    'lora': dict(attn=(1229, 12288), fc1=(3072, 30720), fc2=(3072, 30720)),
    'adapter': dict(attn=(1307, 13064), fc1=(5224, 52232), fc2=(1307, 13064)),
}


def plant(shapes: Dict[str, list], plan: Dict[str, int], seed: int = 0):
    """Zero scores except ``plan[unit]`` random entries per unit, with
    distinct values in (1, 2); returns (scores, planted flat indices per
    parameter, number planted)."""
    gen = torch.Generator().manual_seed(seed)
    units = spt_units(shapes)
    scores = {n: torch.zeros(s) for n, s in shapes.items()}
    planted = {}
    for name, count in plan.items():
        unit = units[name]
        local = torch.randperm(unit.numel, generator=gen)[:count]
        flat = local + unit.flat_range[0]
        scores[unit.param].view(-1)[flat] = 1 + torch.rand(
            count, generator=gen)
        planted[name] = flat.sort().values
    return scores, planted, sum(plan.values())


def allocate_planted(shapes, plan, structured_type='lora', **kwargs):
    """The allocation with tau = the planted count: exactly the planted
    entries are sensitive."""
    scores, planted, tau = plant(shapes, plan)
    return allocate_spt(
        scores,
        target=1,
        structured_type=structured_type,
        tau_step=tau,
        tau_max=tau,
        **kwargs), planted


@pytest.mark.parametrize('structured_type', ['lora', 'adapter'])
def test_thresholds_and_sizes_match_the_spec_table(structured_type):
    units = spt_units(BLOCK0)
    spec = SPEC[structured_type]
    for name, key in [('layers.0.attn.qkv.weight[q]', 'attn'),
                      ('layers.0.attn.qkv.weight[v]', 'attn'),
                      ('layers.0.attn.proj.weight', 'attn'),
                      ('layers.0.ffn.layers.0.0.weight', 'fc1'),
                      ('layers.0.ffn.layers.1.weight', 'fc2')]:
        assert unit_threshold(units[name], structured_type, 8, 10, 5) == \
            spec[key], name
    # Vectors: >= 154 of 768, >= 615 of 3072 (beta = 5).
    assert unit_threshold(units['layers.0.ln1.weight'], structured_type, 8, 10,
                          5) == (154, D)
    assert unit_threshold(units['layers.0.ffn.layers.0.0.bias'],
                          structured_type, 8, 10, 5) == (615, H)


def test_units_split_the_fused_qkv_into_three_row_slices():
    units = spt_units(
        dict(
            BLOCK0,
            cls_token=[1, 1, D],
            **{
                'patch_embed.projection.weight': [D, 3, 16, 16],
                'pos_embed': [1, 197, D]
            }))
    names = list(units)
    assert names[1:4] == [f'layers.0.attn.qkv.weight[{s}]' for s in 'qkv']
    assert names[4:7] == [f'layers.0.attn.qkv.bias[{s}]' for s in 'qkv']
    v = units['layers.0.attn.qkv.weight[v]']
    assert (v.start, v.stop, v.cols, v.kind) == (2 * D, 3 * D, D, 'matrix')
    assert v.flat_range == (2 * D * D, 3 * D * D)
    assert not any('cls_token' in n or 'embed' in n for n in names)
    assert len(units) == 1 + 3 + 3 + 1 + 1 + 1 + 1


@pytest.mark.parametrize('structured_type', ['lora', 'adapter'])
def test_structured_unstructured_split_on_a_constructed_score_map(
        structured_type):
    spec = SPEC[structured_type]
    attn, fc1, fc2 = spec['attn'][0], spec['fc1'][0], spec['fc2'][0]
    plan = {
        'layers.0.attn.qkv.weight[q]': attn,  # at the threshold
        'layers.0.attn.qkv.weight[k]': attn - 1,  # one below
        'layers.0.attn.proj.weight': attn,
        'layers.0.ffn.layers.0.0.weight': fc1 - 1,
        'layers.0.ffn.layers.1.weight': fc2,
        'layers.0.attn.qkv.bias[v]': 154,
        'layers.0.attn.qkv.bias[k]': 153,
        'layers.0.ln1.weight': 154,
        'layers.0.ffn.layers.0.0.bias': 614,
    }
    allocation, planted = allocate_planted(BLOCK0, plan, structured_type)
    validate_allocation(allocation)
    assert allocation['structured'] == [
        'layers.0.attn.qkv.weight[q]', 'layers.0.attn.proj.weight',
        'layers.0.ffn.layers.1.weight'
    ]
    assert allocation['full_vectors'] == [
        'layers.0.ln1.weight', 'layers.0.attn.qkv.bias[v]'
    ]
    modes = {n: u['mode'] for n, u in allocation['units'].items()}
    assert modes['layers.0.attn.qkv.weight[v]'] == 'none'
    unstructured = allocation['unstructured']
    assert sorted(unstructured) == [
        'layers.0.attn.qkv.bias', 'layers.0.attn.qkv.weight',
        'layers.0.ffn.layers.0.0.bias', 'layers.0.ffn.layers.0.0.weight'
    ]
    # Exactly the planted entries, as flat indices into the whole fused
    # tensor: the k slice's entries lie in rows 768..1535.
    for unit, param in [
        ('layers.0.attn.qkv.weight[k]', 'layers.0.attn.qkv.weight'),
        ('layers.0.attn.qkv.bias[k]', 'layers.0.attn.qkv.bias'),
        ('layers.0.ffn.layers.0.0.weight', None),
        ('layers.0.ffn.layers.0.0.bias', None)
    ]:
        assert torch.equal(unstructured[param or unit].long(), planted[unit])
    rows = unstructured['layers.0.attn.qkv.weight'].long() // D
    assert int(rows.min()) >= D and int(rows.max()) < 2 * D
    size = {k: v[1] for k, v in spec.items()}
    counts = allocation['counts']
    assert counts['structured'] == 2 * size['attn'] + size['fc2']
    assert counts['vectors'] == 2 * D
    assert counts['unstructured'] == attn - 1 + fc1 - 1 + 153 + 614
    assert counts['total'] == (
        counts['structured'] + counts['vectors'] + counts['unstructured'] +
        768)
    # In-place trainable entries: the full v-bias slice plus k's entries.
    bias = trainable_indices(allocation)['layers.0.attn.qkv.bias']
    assert bias.numel() == D + 153
    assert torch.equal(bias[-D:], torch.arange(2 * D, 3 * D))


def test_structured_only_drops_the_unstructured_entries():
    plan = {
        'layers.0.attn.qkv.weight[q]': 1229,
        'layers.0.attn.qkv.weight[k]': 1000,
        'layers.0.ln1.weight': 10
    }
    allocation, _ = allocate_planted(BLOCK0, plan, structured_only=True)
    assert allocation['structured'] == ['layers.0.attn.qkv.weight[q]']
    assert allocation['unstructured'] == {}
    assert allocation['counts']['total'] == 12288 + 768


def _reference_totals(scores,
                      taus,
                      structured_type='lora',
                      rank=8,
                      alpha=10,
                      beta=5,
                      cls_token=0):
    """Brute force: sort, mark the top tau, classify every unit."""
    units = spt_units({n: s.shape for n, s in scores.items()})
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    order = torch.sort(flat, descending=True, stable=True).indices
    offsets, start = {}, 0
    for name, s in scores.items():
        offsets[name] = start
        start += s.numel()
    totals = []
    for tau in taus:
        top = torch.zeros_like(flat, dtype=torch.bool)
        top[order[:tau]] = True
        total = cls_token
        for unit in units.values():
            a, b = unit.flat_range
            n = int(top[offsets[unit.param] + a:offsets[unit.param] + b].sum())
            need, size = unit_threshold(unit, structured_type, rank, alpha,
                                        beta)
            total += size if n >= need else n
        totals.append(total)
    return totals


def test_tau_sweep_matches_brute_force_and_picks_the_closest():
    shapes = {
        'layers.0.attn.qkv.weight': [96, 32],
        'layers.0.attn.qkv.bias': [96],
        'layers.0.ln1.weight': [32],
        'layers.0.ffn.layers.0.0.weight': [64, 32],
        'layers.0.ffn.layers.1.weight': [32, 64]
    }
    gen = torch.Generator().manual_seed(3)
    scores = {n: torch.rand(s, generator=gen)**6 for n, s in shapes.items()}
    taus = list(range(40, 2001, 40))
    reference = _reference_totals(scores, taus, cls_token=32)
    for target in (700, 1500, 2500):
        allocation = allocate_spt(
            scores, target, tau_step=40, tau_max=2000, cls_token=32)
        assert allocation['sweep'] == dict(taus=taus, totals=reference)
        best = min(abs(t - target) for t in reference)
        last = max(i for i, t in enumerate(reference)
                   if abs(t - target) == best)
        assert allocation['counts']['tau'] == taus[last]
        assert allocation['counts']['total'] == reference[last]


def test_ties_go_to_the_later_tau():
    # One 100-entry vector (full at >= 20): totals 4, 8, 12, 16, then 100.
    scores = {'layers.0.ln1.weight': torch.linspace(1, 2, 100)}
    allocation = allocate_spt(
        scores, target=6, tau_step=4, tau_max=20, cls_token=0)
    assert allocation['sweep']['totals'] == [4, 8, 12, 16, 100]
    assert allocation['counts']['tau'] == 8  # |4 - 6| == |8 - 6|
    # The top entries are the largest scores: the end of the vector.
    assert allocation['unstructured']['layers.0.ln1.weight'].tolist() == \
        list(range(92, 100))


def test_invalid_inputs_and_modified_files_are_refused():
    scores = {'layers.0.ln1.weight': torch.rand(32)}
    with pytest.raises(ValueError, match="'head.fc.weight'.*excluded"):
        allocate_spt(
            dict(scores, **{'head.fc.weight': torch.rand(4, 32)}),
            10,
            tau_step=4,
            tau_max=8)
    with pytest.raises(ValueError, match='non-negative'):
        allocate_spt({'layers.0.ln1.weight': -torch.rand(32)},
                     10,
                     tau_step=4,
                     tau_max=8)
    with pytest.raises(ValueError, match='tau_step=64 exceeds'):
        allocate_spt(scores, 10, tau_step=64, tau_max=128)
    with pytest.raises(ValueError, match="structured_type must be one of"):
        allocate_spt(
            scores, 10, structured_type='prefix', tau_step=4, tau_max=8)
    allocation = allocate_spt(scores, 10, tau_step=4, tau_max=8, cls_token=0)
    validate_allocation(allocation, source='a.pth')
    allocation['unstructured']['layers.0.ln1.weight'][0] = 31
    with pytest.raises(ValueError, match='a.pth.*ascending'):
        validate_allocation(allocation, source='a.pth')
    allocation['unstructured']['layers.0.ln1.weight'] = torch.tensor(
        [0, 1], dtype=torch.int32)
    with pytest.raises(ValueError, match='a.pth: checksum mismatch'):
        validate_allocation(allocation, source='a.pth')
    with pytest.raises(ValueError, match='not an SPT allocation'):
        validate_allocation({'format': 'mmtrpts.selection'}, source='a.pth')
