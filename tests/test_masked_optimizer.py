"""Exactness and bookkeeping of the masked optimizer wrappers."""
import copy

import pytest
import torch
import torch.nn as nn
from mmengine.optim import build_optim_wrapper
from mmengine.optim.scheduler import CosineAnnealingLR, LinearLR

from mmtrpts.engine.optimizers import MaskedOptimWrapper
from mmtrpts.selection.eligibility import FROZEN, FULL, MASKED
from mmtrpts.selection.record import selection_checksum


class TinyNet(nn.Module):
    """A backbone with a Linear, a Conv, a norm and a head."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.conv = nn.Conv2d(3, 6, 3)
        self.backbone.norm = nn.LayerNorm(6)
        self.backbone.fc = nn.Linear(6, 8)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = self.backbone.conv(x).mean((2, 3))
        return self.head(torch.relu(self.backbone.fc(self.backbone.norm(x))))


def _selection(model, per_row=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    indices = {}
    for name in ('backbone.conv.weight', 'backbone.fc.weight'):
        param = dict(model.named_parameters())[name]
        rows, cols = param.shape[0], param[0].numel()
        picks = [
            torch.randperm(cols, generator=generator)[:per_row] + r * cols
            for r in range(rows)
        ]
        indices[name] = torch.cat(picks).sort().values
    full = ['backbone.conv.bias', 'backbone.fc.bias', 'head.weight',
            'head.bias']
    return dict(indices=indices, full=full,
                checksum=selection_checksum(indices))


def _build(model, optimizer, **wrapper_kwargs):
    cfg = dict(constructor='FisherMaskOptimWrapperConstructor',
               optimizer=optimizer, **wrapper_kwargs)
    return build_optim_wrapper(model, cfg)


def _train(model, wrapper, steps, accumulate=1, seed=1):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps * accumulate):
        x = torch.randn(4, 3, 7, 7, generator=generator)
        y = torch.randint(0, 4, (4, ), generator=generator)
        with wrapper.optim_context(model):
            loss = nn.functional.cross_entropy(model(x), y)
        wrapper.update_params(loss)


OPTIMIZERS = {
    'adamw': dict(type='AdamW', lr=1e-2, weight_decay=0.1),
    'sgd': dict(type='SGD', lr=1e-1, momentum=0.9, weight_decay=1e-4),
    'adam_l2': dict(type='Adam', lr=1e-2, weight_decay=1e-3),
}


@pytest.mark.parametrize('optimizer', list(OPTIMIZERS))
@pytest.mark.parametrize('extra', [{}, dict(clip_grad=dict(max_norm=0.1)),
                                   dict(accumulative_counts=2)],
                         ids=['plain', 'clip', 'accumulate'])
def test_unselected_entries_stay_bit_identical(optimizer, extra):
    torch.manual_seed(0)
    model = TinyNet()
    initial = copy.deepcopy(model.state_dict())
    wrapper = _build(model, OPTIMIZERS[optimizer], **extra)
    assert isinstance(wrapper, MaskedOptimWrapper)
    selection = _selection(model)
    wrapper.arm(selection)
    _train(model, wrapper, steps=5,
           accumulate=extra.get('accumulative_counts', 1))
    state = model.state_dict()
    for name, idx in selection['indices'].items():
        mask = torch.zeros(state[name].numel(), dtype=torch.bool)
        mask[idx] = True
        before, after = initial[name].view(-1), state[name].view(-1)
        assert torch.equal(before[~mask], after[~mask]), name
        assert not torch.equal(before[mask], after[mask]), name
    for name in ('backbone.norm.weight', 'backbone.norm.bias'):
        assert torch.equal(initial[name], state[name])  # frozen by rule
    for name in selection['full']:
        assert not torch.equal(initial[name], state[name])


def test_constructor_roles_and_quiet_filtering():
    model = TinyNet()
    wrapper = _build(model, OPTIMIZERS['adamw'])
    assert wrapper.roles == {
        'backbone.conv.weight': MASKED, 'backbone.conv.bias': FULL,
        'backbone.norm.weight': FROZEN, 'backbone.norm.bias': FROZEN,
        'backbone.fc.weight': MASKED, 'backbone.fc.bias': FULL,
        'head.weight': FULL, 'head.bias': FULL
    }
    held = {id(p) for g in wrapper.optimizer.param_groups
            for p in g['params']}
    assert id(model.backbone.norm.weight) not in held
    assert all(p.requires_grad for p in model.parameters())  # DDP-safe


def test_optimizer_state_scales_with_selected_entries():
    model = TinyNet()
    wrapper = _build(model, OPTIMIZERS['adamw'])
    selection = _selection(model, per_row=1)
    wrapper.arm(selection)
    _train(model, wrapper, steps=1)
    selected = sum(i.numel() for i in selection['indices'].values())
    full = sum(dict(model.named_parameters())[n].numel()
               for n in selection['full'])
    assert wrapper.num_updated() == selected + full
    assert wrapper.state_numel() == 2 * (selected + full)  # exp_avg(_sq)


def test_param_groups_keys_and_schedulers_survive_arming():
    torch.manual_seed(0)
    dense_model, masked_model = TinyNet(), TinyNet()
    masked_model.load_state_dict(dense_model.state_dict())
    cfg = dict(type='AdamW', lr=1e-2, weight_decay=0.1)
    paramwise = dict(paramwise_cfg=dict(bias_decay_mult=0.))
    dense = _build(dense_model, cfg, **paramwise)
    masked = _build(masked_model, cfg, **paramwise)
    schedulers = []
    for wrapper in (dense, masked):
        schedulers.append([
            LinearLR(wrapper, start_factor=0.1, by_epoch=False, begin=0,
                     end=3),
            CosineAnnealingLR(wrapper, by_epoch=False, begin=3, end=8,
                              eta_min=0.)
        ])
    lrs = {0: [], 1: []}
    for step in range(8):
        if step == 2:  # arm mid-warm-up, as before_train may after resume
            masked.arm(_selection(masked_model))
        for i, wrapper in enumerate((dense, masked)):
            lrs[i].append([g['lr'] for g in wrapper.param_groups])
            _train((dense_model, masked_model)[i], wrapper, steps=1,
                   seed=step)
            for scheduler in schedulers[i]:
                scheduler.step()
    assert lrs[0] == lrs[1]
    assert [g['weight_decay'] for g in masked.param_groups] == \
        [g['weight_decay'] for g in dense.param_groups]


def test_resume_rearms_and_continues_bit_identically():
    torch.manual_seed(0)
    model = TinyNet()
    start = copy.deepcopy(model.state_dict())
    wrapper = _build(model, OPTIMIZERS['adamw'])
    selection = _selection(model)
    wrapper.arm(selection)
    _train(model, wrapper, steps=3, seed=1)
    saved_model = copy.deepcopy(model.state_dict())
    saved_optim = copy.deepcopy(wrapper.state_dict())
    assert saved_optim['masked_selection']['checksum'] == \
        selection['checksum']
    _train(model, wrapper, steps=3, seed=2)
    uninterrupted = model.state_dict()

    resumed = TinyNet()
    resumed.load_state_dict(start)
    wrapper2 = _build(resumed, OPTIMIZERS['adamw'])
    resumed.load_state_dict(saved_model)
    wrapper2.load_state_dict(saved_optim)
    assert wrapper2.armed and 'masked_selection' in saved_optim  # not popped
    _train(resumed, wrapper2, steps=3, seed=2)
    for name, value in resumed.state_dict().items():
        assert torch.equal(value, uninterrupted[name]), name


def test_dense_state_onto_armed_wrapper_fails_loudly():
    model = TinyNet()
    dense_state = _build(model, OPTIMIZERS['adamw']).state_dict()
    wrapper = _build(model, OPTIMIZERS['adamw'])
    wrapper.arm(_selection(model))
    with pytest.raises(RuntimeError, match='dense optimizer state'):
        wrapper.load_state_dict(dense_state)
    other = _build(model, OPTIMIZERS['adamw'])
    other.arm(_selection(model, seed=1))
    with pytest.raises(RuntimeError, match='selection differs'):
        wrapper.load_state_dict(other.state_dict())


def test_arm_rejects_unknown_names_and_bad_indices():
    model = TinyNet()
    wrapper = _build(model, OPTIMIZERS['adamw'])
    with pytest.raises(KeyError, match='backbone.norm.weight'):
        wrapper.arm(dict(indices={'backbone.norm.weight': torch.tensor([0])},
                         full=[]))
    with pytest.raises(IndexError, match='backbone.fc.weight'):
        wrapper.arm(dict(indices={'backbone.fc.weight': torch.tensor([48])},
                         full=[]))


def test_unknown_wrapper_type_is_rejected():
    with pytest.raises(ValueError, match="'ZeroRedundancyOptimizer'"):
        _build(TinyNet(), OPTIMIZERS['adamw'], type='ZeroRedundancyOptimizer')
