"""Sparse-value layers: back-ends, layers, conversion, optimizer exactness."""
import copy
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import REPO

from mmtrpts.complexity.flops import count_flops
from mmtrpts.efficiency.token_selection import build_classifier
from mmtrpts.complexity.params import count_parameters
from mmtrpts.engine.optimizers.masked_optim_wrapper import MaskedOptimWrapper
from mmtrpts.models.utils import sddmm as sddmm_module
from mmtrpts.models.utils.sddmm import (resolve_backend, sddmm_reference,
                                        sddmm_torch)
from mmtrpts.models.utils.sparse_values import (SparseValueLinear,
                                                SparseValuePatchConv2d,
                                                sparse_value_layers,
                                                to_sparse_values)


def _pairs(out_features, in_features, count, seed=0):
    generator = torch.Generator().manual_seed(seed)
    flat = torch.randperm(
        out_features * in_features, generator=generator)[:count]
    return flat, flat // in_features, flat % in_features


@pytest.mark.parametrize('pairs', [20, 200], ids=['columns', 'rows'])
@pytest.mark.parametrize('small_chunks', [True, False])
def test_torch_backend_matches_dense_gradient_at_selected_pairs(
        pairs, small_chunks, monkeypatch):
    # 20 pairs <= out + in: the column layout; 200: the transposed rows.
    if small_chunks:  # many chunks, and a last partial one
        monkeypatch.setattr(sddmm_module, 'ROW_CHUNK_ELEMENTS', 40)
        monkeypatch.setattr(sddmm_module, 'COLUMN_CHUNK_ELEMENTS', 50)
    torch.manual_seed(0)
    grad, inputs = torch.randn(37, 23), torch.randn(37, 11)
    _, rows, cols = _pairs(23, 11, pairs)
    expected = (grad.double().t() @ inputs.double())[rows, cols]
    for got in (sddmm_torch(grad, inputs, rows,
                            cols), sddmm_reference(grad, inputs, rows, cols)):
        assert got.dtype == torch.float32
        torch.testing.assert_close(
            got.double(), expected, rtol=1e-5, atol=1e-5)
    # fp32 accumulation of bf16 operands: the products are summed in fp32.
    bf16 = sddmm_torch(grad.bfloat16(), inputs.bfloat16(), rows, cols)
    exact = sddmm_reference(grad.bfloat16(), inputs.bfloat16(), rows, cols)
    torch.testing.assert_close(bf16, exact, rtol=1e-5, atol=1e-5)
    assert sddmm_torch(grad, inputs, rows[:0], cols[:0]).numel() == 0


def test_backend_names_are_checked():
    assert resolve_backend('auto', torch.device('cpu')) == 'torch'
    with pytest.raises(ValueError, match="unknown sparse-value back-end 'x'"):
        resolve_backend('x', torch.device('cpu'))
    with pytest.raises(
            RuntimeError,
            match="backend='triton' cannot run on "
            'cpu: Triton back-end runs on CUDA tensors only'):
        resolve_backend('triton', torch.device('cpu'))


def test_triton_kernel_in_interpreter_mode_matches_reference():
    pytest.importorskip('triton')
    script = textwrap.dedent("""
        import torch
        from mmtrpts.models.utils.sddmm import sddmm_reference
        from mmtrpts.models.utils.sddmm import sddmm_triton
        torch.manual_seed(0)
        grad, inputs = torch.randn(300, 40), torch.randn(300, 24)
        flat = torch.randperm(40 * 24)[:77]
        rows, cols = flat // 24, flat % 24
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            g, x = grad.to(dtype), inputs.to(dtype)
            got = sddmm_triton(g, x, rows, cols)
            want = sddmm_reference(g, x, rows, cols)
            assert got.dtype == torch.float32
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        print('ok')
    """)
    proc = subprocess.run([sys.executable, '-c', script],
                          cwd=REPO,
                          capture_output=True,
                          text=True,
                          timeout=300,
                          env=dict(
                              os.environ,
                              TRITON_INTERPRET='1',
                              PYTHONWARNINGS='ignore'))
    assert proc.returncode == 0 and 'ok' in proc.stdout, proc.stderr[-3000:]


def _layer_pair(kind, count=30):
    torch.manual_seed(1)
    if kind == 'linear':
        dense = nn.Linear(12, 20)
        inputs = torch.randn(2, 9, 12, requires_grad=True)
    else:
        dense = nn.Conv2d(3, 8, kernel_size=4, stride=4)
        inputs = torch.randn(2, 3, 8, 12, requires_grad=True)
    flat, _, _ = _pairs(dense.weight.shape[0], dense.weight[0].numel(), count)
    layer_type = SparseValueLinear if kind == 'linear' else \
        SparseValuePatchConv2d
    return dense, layer_type(copy.deepcopy(dense), flat, 'torch'), inputs, \
        flat


@pytest.mark.parametrize('kind', ['linear', 'patch_conv'])
@pytest.mark.parametrize('backend', ['torch', 'reference'])
@pytest.mark.parametrize('count', [4, 200])
def test_layer_gradients_match_the_dense_layer(kind, backend, count):
    dense, layer, inputs, flat = _layer_pair(kind, count)
    # 4 entries use at most 4 input columns: only those are saved.
    assert layer.compact_input == (count == 4)
    layer.backend = backend
    assert isinstance(layer, type(dense))
    out_dense = dense(inputs)
    x = inputs.detach().clone().requires_grad_(True)
    out = layer(x)
    assert torch.equal(out, out_dense)  # the ordinary dense forward
    grad = torch.randn_like(out)
    out_dense.backward(grad)
    out.backward(grad)
    torch.testing.assert_close(x.grad, inputs.grad)
    torch.testing.assert_close(layer.weight_values.grad,
                               dense.weight.grad.view(-1)[flat])
    torch.testing.assert_close(layer.bias.grad, dense.bias.grad)
    assert layer.weight.grad is None and not layer.weight.requires_grad


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_layer_under_cpu_autocast_accumulates_in_fp32(dtype):
    dense, layer, inputs, flat = _layer_pair('linear')
    x = inputs.detach().clone().requires_grad_(True)
    with torch.autocast('cpu', dtype=dtype):
        out_dense = dense(inputs)
        out = layer(x)
    assert out.dtype == out_dense.dtype == dtype
    torch.testing.assert_close(out, out_dense)
    grad = torch.randn_like(out)
    out_dense.backward(grad)
    out.backward(grad)
    assert x.grad.dtype == torch.float32
    assert layer.weight_values.grad.dtype == torch.float32
    torch.testing.assert_close(x.grad, inputs.grad)
    # the reference: fp32 sum of the products of the autocast operands
    expected = sddmm_reference(
        grad.reshape(-1, 20),
        inputs.detach().to(dtype).reshape(-1, 12), flat // 12, flat % 12)
    torch.testing.assert_close(layer.weight_values.grad, expected)


def test_state_dict_is_the_dense_layers_and_loading_refreshes_values():
    dense, layer, _, flat = _layer_pair('linear')
    assert set(layer.state_dict()) == set(dense.state_dict())
    with torch.no_grad():
        layer.weight_values.mul_(3)  # e.g. an optimizer step
    state = layer.state_dict()
    assert torch.equal(state['weight'].view(-1)[flat], layer.weight_values)
    unselected = torch.ones(240, dtype=torch.bool)
    unselected[flat] = False
    assert torch.equal(state['weight'].view(-1)[unselected],
                       dense.weight.detach().view(-1)[unselected])
    fresh = _layer_pair('linear')[1]
    fresh.load_state_dict(state)  # strict: a dense dict fits exactly
    assert torch.equal(fresh.weight_values, layer.weight_values)
    dense.load_state_dict(state)
    assert torch.equal(dense.weight, layer.weight)


class _BranchLinear(nn.Linear):
    """A Linear subclass with its own forward (as LoRA-style layers)."""

    def forward(self, x):
        return super().forward(x) + x.sum(-1, keepdim=True)


def test_conversion_paths_and_errors():
    model = nn.Module()
    model.fc = nn.Linear(4, 6)
    model.branch = _BranchLinear(4, 4)  # converting would drop its branch
    model.attn = nn.MultiheadAttention(4, 2)
    model.conv = nn.Conv2d(3, 4, 3, padding=1)  # overlapping: not a Linear
    model.patch = nn.Conv2d(3, 4, 2, stride=2)
    indices = {
        'fc.weight': torch.tensor([0, 5]),
        'branch.weight': torch.tensor([0]),
        'attn.out_proj.weight': torch.tensor([1]),
        'conv.weight': torch.tensor([2]),
        'patch.weight': torch.tensor([3, 4]),
        'fc.bias': torch.tensor([0])
    }
    before = count_parameters(model)
    layers = to_sparse_values(model, indices, 'torch')
    assert sorted(layers) == ['fc.weight', 'patch.weight']
    after = count_parameters(model)  # the values are not counted twice
    assert after['total'] == before['total']
    assert after['trainable'] == before['trainable'] - 24 - 48 + 2 + 2
    # mmcv's FFN Linear (forward = F.linear) is converted like nn.Linear
    from mmcv.cnn.bricks.wrappers import Linear as MMCVLinear
    holder = nn.Sequential(MMCVLinear(3, 3))
    assert list(to_sparse_values(holder, {'0.weight': torch.tensor([4])}))
    assert sparse_value_layers(model) == layers
    assert type(model.conv) is nn.Conv2d
    assert type(model.branch) is _BranchLinear
    with pytest.raises(RuntimeError, match='fc is already a sparse-value'):
        to_sparse_values(model, {'fc.weight': torch.tensor([1])})
    with pytest.raises(ValueError, match='indices must be unique'):
        SparseValueLinear(nn.Linear(2, 2), torch.tensor([1, 1]))
    with pytest.raises(
            IndexError, match=r'out of range for a weight of '
            r'shape \(2, 2\)'):
        SparseValueLinear(nn.Linear(2, 2), torch.tensor([4]))


def test_flops_of_a_converted_vit_equal_the_dense_vits():
    model = build_classifier(
        dict(type='VisionTransformer'),
        dict(embed_dims=32, num_layers=2, num_heads=2,
             feedforward_channels=64),
        img_size=32, patch_size=8, num_classes=3)
    dense = count_flops(model, (3, 32, 32))
    indices = {
        n: torch.tensor([0, 1])
        for n, p in model.named_parameters()
        if n.startswith('backbone') and p.dim() > 1
    }
    assert len(to_sparse_values(model, indices, 'torch')) == 9
    assert count_flops(model, (3, 32, 32)) == dense > 0


# -- the optimizer: sparse values against the masked path ------------------
def _model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 2, stride=2), nn.Flatten(2), _Transpose(),
        nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 5))


class _Transpose(nn.Module):

    def forward(self, x):
        return x.transpose(1, 2)


def _selection(model, count=6):
    indices = {}
    for i, (name, param) in enumerate(model.named_parameters()):
        if name.endswith('weight'):
            indices[name] = _pairs(
                param.shape[0], param[0].numel(), count, seed=i)[0]
    full = [n for n in indices if n.startswith('5.')] + \
        [n for n, _ in model.named_parameters() if n.endswith('bias')]
    return dict(
        indices={
            n: i
            for n, i in indices.items() if not n.startswith('5.')
        },
        full=full)


def _wrapper(model, optimizer, selection, sparse, **kwargs):
    wrapper = MaskedOptimWrapper(
        optimizer=optimizer(model.parameters()), **kwargs)
    wrapper.bind_param_names(model)
    wrapper.arm(selection)
    if sparse:
        wrapper.use_sparse_values(
            to_sparse_values(model, selection['indices'], sparse))
    return wrapper


def _train(model, wrapper, steps, seed=3):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(4, 3, 6, 6, generator=generator)
        y = torch.randint(0, 5, (4, ), generator=generator)
        loss = F.cross_entropy(model(x).mean(1), y)
        wrapper.update_params(loss)


@pytest.mark.parametrize(
    'optimizer,kwargs', [
        (lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1), {}),
        (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
         dict(clip_grad=dict(max_norm=0.05), accumulative_counts=2)),
    ],
    ids=['adamw-wd', 'sgd-momentum-clip-accumulate'])
def test_sparse_values_follow_the_masked_path(optimizer, kwargs):
    base = _model()
    selection = _selection(base)
    masked, sparse = copy.deepcopy(base), copy.deepcopy(base)
    masked_wrapper = _wrapper(masked, optimizer, selection, None, **kwargs)
    sparse_wrapper = _wrapper(sparse, optimizer, selection, 'torch', **kwargs)
    assert sparse_wrapper.num_updated() == masked_wrapper.num_updated()
    _train(masked, masked_wrapper, 6)
    _train(sparse, sparse_wrapper, 6)
    before = base.state_dict()
    for name, value in sparse.state_dict().items():
        torch.testing.assert_close(
            value, masked.state_dict()[name], rtol=1e-5, atol=1e-6, msg=name)
        if name in selection['indices']:
            keep = torch.ones(value.numel(), dtype=torch.bool)
            keep[selection['indices'][name]] = False
            assert torch.equal(
                value.view(-1)[keep], before[name].view(-1)[keep]), name
            assert not torch.equal(value, before[name]), name


def test_state_moves_from_leaves_to_values_and_resume_is_exact():
    adamw = (lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1))
    base = _model()
    selection = _selection(base)
    straight = copy.deepcopy(base)
    wrapper = _wrapper(straight, adamw, selection, 'reference')
    _train(straight, wrapper, 2)
    saved_model = copy.deepcopy(straight.state_dict())
    saved_optim = copy.deepcopy(wrapper.state_dict())
    _train(straight, wrapper, 3, seed=4)
    # Resume as MMEngine does: model weights, then the optimizer state (the
    # wrapper re-arms with leaves), then the sparse-value form.
    resumed = copy.deepcopy(base)
    resumed.load_state_dict(saved_model)
    wrapper = MaskedOptimWrapper(optimizer=adamw(resumed.parameters()))
    wrapper.bind_param_names(resumed)
    wrapper.load_state_dict(saved_optim)
    assert wrapper.armed and len(wrapper.optimizer.state) > 0
    wrapper.use_sparse_values(
        to_sparse_values(resumed, selection['indices'], 'reference'))
    assert all(
        layer.weight_values in wrapper.optimizer.state
        for layer in sparse_value_layers(resumed).values())
    _train(resumed, wrapper, 3, seed=4)
    for name, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name


def test_a_bypassed_sparse_value_layer_fails_loudly():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    selection = dict(
        indices={'0.weight': torch.tensor([0, 3])}, full=['1.weight'])
    wrapper = _wrapper(model, lambda p: torch.optim.SGD(p, lr=0.1), selection,
                       'torch')
    loss = F.linear(torch.randn(3, 4), model[0].weight).sum() + \
        model[1](torch.randn(3, 4)).sum()
    with pytest.raises(
            RuntimeError,
            match=r'0\.weight took the sparse-value '
            'form but its values got no gradient'):
        wrapper.update_params(loss)
