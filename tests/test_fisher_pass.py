"""The Fisher pass glue: data, exact scores, head checks, linear probe."""
import pytest
import torch
import torch.nn.functional as F
from conftest import write_tiny_config
from mmengine.config import Config
from mmpretrain.registry import MODELS

from mmtrpts.engine.fisher_pass import (build_fisher_dataloader,
                                        compute_fisher_scores,
                                        fisher_dataloader_cfg,
                                        linear_probe_head)
from mmtrpts.selection.eligibility import MASKED, assign_roles


@pytest.fixture()
def cfg(tmp_path, mini_vtab):
    path = write_tiny_config(str(tmp_path / 'cfg.py'), mini_vtab)
    return Config.fromfile(path)


@pytest.fixture()
def model(cfg):
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def test_fisher_dataloader_cfg_uses_test_pipeline_unshuffled_unpadded(cfg):
    loader = fisher_dataloader_cfg(cfg, batch_size=5, max_samples=7)
    assert loader['batch_size'] == 5
    assert loader['sampler'] == dict(type='DefaultSampler', shuffle=False,
                                     round_up=False)
    assert loader['dataset']['pipeline'] == \
        cfg.test_dataloader.dataset.pipeline
    assert loader['dataset']['split'] == 'train800val200'
    assert loader['dataset']['indices'] == 7
    assert cfg.train_dataloader.batch_size == 8  # the config is not changed
    with pytest.raises(ValueError, match="'val'"):
        fisher_dataloader_cfg(cfg, pipeline='val')


def test_scores_equal_mean_squared_batch_gradients(cfg, model):
    loader = build_fisher_dataloader(cfg, batch_size=16, max_samples=40)
    roles = assign_roles(model)
    params = {n: p for n, p in model.named_parameters()
              if roles[n] == MASKED}
    model.train()
    scores, stats = compute_fisher_scores(model, loader, params,
                                          progress=False)
    assert stats['num_batches'] == 3 and stats['num_samples'] == 40
    assert model.training  # mode restored
    assert all(p.grad is None for p in model.parameters())  # untouched

    model.eval()
    expected = {n: torch.zeros_like(p) for n, p in params.items()}
    for data in loader:
        data = model.data_preprocessor(data, False)
        labels = torch.cat([s.gt_label for s in data['data_samples']])
        loss = F.cross_entropy(model(data['inputs'], mode='tensor'), labels)
        grads = torch.autograd.grad(loss, list(params.values()))
        for name, grad in zip(params, grads):
            expected[name] += grad.square()
    for name in params:
        torch.testing.assert_close(scores[name], expected[name] / 3,
                                   rtol=1e-6, atol=0)
    assert set(scores) == {
        'backbone.patch_embed.projection.weight',
        *(f'backbone.layers.{i}.{m}.weight' for i in range(2)
          for m in ('attn.qkv', 'attn.proj', 'ffn.layers.0.0',
                    'ffn.layers.1'))
    }


def test_zero_head_is_refused(cfg, model):
    loader = build_fisher_dataloader(cfg, batch_size=16, max_samples=16)
    torch.nn.init.zeros_(model.head.fc.weight)
    with pytest.raises(ValueError, match='head is all zeros'):
        compute_fisher_scores(
            model, loader,
            dict(w=model.backbone.layers[0].attn.qkv.weight), progress=False)


def test_linear_probe_trains_only_the_head(cfg, model):
    loader = build_fisher_dataloader(cfg, batch_size=16)
    backbone = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head = model.head.fc.weight.detach().clone()
    accuracy = linear_probe_head(model, loader, epochs=30, lr=1e-2)
    assert accuracy > 2 / 6  # 6 classes: chance is 1/6
    assert not torch.equal(head, model.head.fc.weight)
    for name, value in model.backbone.state_dict().items():
        assert torch.equal(value, backbone[name]), name
    assert model.head.fc.weight.grad is None


def test_linear_probe_uses_eval_features_and_no_backward_through_model(
        tmp_path, mini_vtab):
    # Strong drop-path: train-mode features would differ call to call.
    path = write_tiny_config(str(tmp_path / 'cfg.py'), mini_vtab, extra="""
model['backbone']['drop_path_rate'] = 0.5
model['backbone']['drop_rate'] = 0.5
""")
    cfg = Config.fromfile(path)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    start = {k: v.clone() for k, v in model.head.state_dict().items()}
    touched = []
    for param in model.parameters():  # as DDP's reducer hooks would be
        param.register_hook(lambda grad, touched=touched: touched.append(1))
    loader = build_fisher_dataloader(cfg, batch_size=16)
    results = []
    for _ in range(2):
        model.head.load_state_dict(start)
        results.append((linear_probe_head(model, loader, epochs=3, lr=1e-2),
                        model.head.fc.weight.detach().clone()))
    assert results[0][0] == results[1][0]
    assert torch.equal(results[0][1], results[1][1])
    assert not torch.equal(results[0][1], start['fc.weight'])
    assert touched == [] and model.head.fc.weight.grad is None
    assert model.training  # the run's mode is restored


def test_non_finite_loss_names_the_batch(cfg, model):
    loader = build_fisher_dataloader(cfg, batch_size=16, max_samples=32)
    with torch.no_grad():
        model.backbone.ln1.weight.fill_(float('nan'))
    with pytest.raises(RuntimeError,
                       match=r'met 2 batches whose loss is not finite '
                       r'\(batch 0: loss nan \(images \[.*\.jpg'):
        compute_fisher_scores(
            model, loader,
            dict(w=model.backbone.layers[0].attn.qkv.weight), progress=False)


def test_empty_data_is_named(model):
    from mmtrpts.engine import ParameterSelection
    with pytest.raises(RuntimeError, match=r'saw no batch: the training '
                       r'split \(task=dtd\) is empty'):
        compute_fisher_scores(
            model, [], dict(w=model.backbone.layers[0].attn.qkv.weight),
            progress=False, source='the training split (task=dtd)')
    with pytest.raises(ValueError, match='max_samples must be None or an '
                       'integer >= 1, got 0'):
        ParameterSelection(max_samples=0)
