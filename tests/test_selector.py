"""ParameterSelector / ParameterSelection: one home, checked when built."""
import pytest
import torch
from mmpretrain.registry import HOOKS

from mmtrpts.engine import ParameterSelection
from mmtrpts.selection import (ParameterSelector, budget_to_entries,
                               calibrate_trpts, select_global_topk,
                               select_gps)
from mmtrpts.selection.eligibility import FROZEN, FULL, MASKED
from mmtrpts.selection.selector import DEFAULT_TARGET_RATIO


def _toy():
    """Scores, parameters and roles of a two-matrix 'backbone' + head."""
    gen = torch.Generator().manual_seed(0)
    named = {
        'backbone.a.weight': torch.zeros(16, 32),
        'backbone.a.bias': torch.zeros(16),
        'backbone.b.weight': torch.zeros(32, 16),
        'backbone.ln.weight': torch.zeros(16),
        'head.fc.weight': torch.zeros(4, 32),
    }
    roles = {
        'backbone.a.weight': MASKED, 'backbone.b.weight': MASKED,
        'backbone.a.bias': FULL, 'head.fc.weight': FULL,
        'backbone.ln.weight': FROZEN
    }
    scores = {n: torch.rand(named[n].shape, generator=gen)
              for n, role in roles.items() if role == MASKED}
    return scores, named, roles


def test_defaults_are_the_papers_vtab_budget():
    selector = ParameterSelector()
    assert selector.rule == 'trpts'
    assert selector.target_ratio == DEFAULT_TARGET_RATIO == 0.0034
    assert selector.options['c_min'] == 1.0
    hook = HOOKS.build(dict(type='FisherSelectionHook'))
    assert hook.selection.selector.target_ratio == 0.0034


@pytest.mark.parametrize('rule,options,message', [
    ('gps', dict(k=1, target_ratio=0.01), r"'gps'.*\['target_ratio'\]"),
    ('gps', dict(k=1, m_percent=1.0), r"'gps'.*\['m_percent'\]"),
    ('gps', dict(k=1, c_min=2.0), r"'gps'.*\['c_min'\]"),
    ('global_topk', dict(num=5, target_ratio=0.01),
     r"'global_topk'.*\['target_ratio'\]"),
    ('trpts', dict(k=2), r"'trpts'.*\['k'\]"),
    ('trpts', dict(target_ratio=0.01, m_percent=1.0), 'not both'),
    ('trpts', dict(target_ratio=1.5), 'target_ratio must be in'),
    ('trpts', dict(c_min=0), 'c_min must be'),
    ('trpts', dict(weight='median'), 'weight'),
    ('trpts', dict(granularity='row'), 'granularity'),
    ('gps', dict(), "needs k"),
    ('global_topk', dict(), 'exactly one of num and fraction'),
    ('global_topk', dict(fraction=2.0), 'fraction must be in'),
    ('lottery', dict(), 'rule must be one of'),
    ('trpts', dict(budget_denominator='head'), 'budget_denominator'),
])
def test_bad_settings_fail_when_built(rule, options, message):
    with pytest.raises(ValueError, match=message):
        ParameterSelector(rule, **options)


def test_hook_checks_its_settings_before_any_pass():
    # No runner, model or data exists: the error comes from building.
    with pytest.raises(ValueError, match=r"\['target_ratio'\]"):
        HOOKS.build(dict(type='FisherSelectionHook', rule='gps', k=1,
                         target_ratio=0.01))
    with pytest.raises(ValueError, match='head must be one of'):
        ParameterSelection(head='probe')


def test_trpts_budget_path_equals_the_direct_calls():
    scores, named, roles = _toy()
    record = ParameterSelector(target_ratio=0.2).select(scores, named, roles)
    backbone = sum(p.numel() for n, p in named.items()
                   if n.startswith('backbone.'))
    full = 16 + 4 * 32  # a.bias + head
    target = budget_to_entries(0.2, backbone, full)
    direct = calibrate_trpts(scores, target)
    assert record['budget'] == dict(
        target_ratio=0.2, denominator=backbone, denominator_kind='backbone',
        full=full, trainable=direct.num_selected + full,
        realized_ratio=(direct.num_selected + full) / backbone)
    for name, idx in direct.indices.items():
        assert torch.equal(record['indices'][name].long(), idx)
    assert record['full'] == sorted(['backbone.a.bias', 'head.fc.weight'])


def test_gps_and_global_topk_through_the_selector():
    scores, named, roles = _toy()
    gps = ParameterSelector('gps', k=3).select(scores, named, roles)
    direct = select_gps(scores, 3)
    assert gps['settings']['num_selected'] == direct.num_selected == 3 * 48
    top = ParameterSelector('global_topk', num=7,
                            budget_denominator='model').select(
                                scores, named, roles, head='random')
    assert top['settings']['num_selected'] == 7
    assert top['head'] == 'random'
    assert top['budget']['denominator'] == sum(
        p.numel() for p in named.values())
    assert torch.equal(top['indices']['backbone.a.weight'].long(),
                       select_global_topk(scores, num=7).indices[
                           'backbone.a.weight'])
