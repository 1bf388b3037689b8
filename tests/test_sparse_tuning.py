"""Sparse-Tuning: Dense Adapters, SparseTuningViT, BNLinearClsHead.

The stage-sum forward is checked against a line-by-line transcription of
the released code's loop (docs/methods/sparse_tuning.md §2a table); ViT-B/16
shapes, parameter counts and FLOPs against §1/§2a/§4; the embedded config
learns a generated task (the benchmark configs: test_method_configs.py).
"""
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO
from mmengine.config import Config
from mmengine.runner import Runner
from mmpretrain.registry import MODELS

from mmtrpts.apis import set_task
from mmtrpts.complexity import count_flops, count_parameters
from mmtrpts.models import BNLinearClsHead, SparseTuningViT, TokenKeepFuseViT
from mmtrpts.models.peft import PaperDenseAdapter, StageSumAdapter
from mmtrpts.models.peft.dense_adapter import stage_sum_schedule
from mmtrpts.models.utils import keep_fuse, num_kept

#: 12 tiny blocks, so the reference's (3, 6, 9) fits: 16 patches ->
#: 17 -> 14 -> 12 -> 10 tokens.
TINY12 = dict(
    arch=dict(
        embed_dims=32, num_layers=12, num_heads=2, feedforward_channels=64),
    img_size=32,
    patch_size=8)
TINY_TOKENS = [17] * 3 + [14] * 3 + [12] * 3 + [10] * 3
VIT_B = dict(arch='b', img_size=224, patch_size=16)
EMBEDDED = osp.join(REPO, 'configs', 'embedded',
                    'vit-tiny_sparse-tuning_mini-vtab.py')


def _randomise_adapters(backbone: SparseTuningViT, seed: int = 0) -> None:
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in backbone.adapters.parameters():
            param.normal_(std=0.1)


def _classifier(backbone: dict,
                num_classes: int = 100,
                in_channels: int = 768):
    return MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=backbone,
            head=dict(
                type='BNLinearClsHead',
                num_classes=num_classes,
                in_channels=in_channels)))


def _adapter_token_counts(backbone, image):
    counts = []
    hooks = [
        a.register_forward_hook(
            lambda m, args, out: counts.append(out.shape[1]))
        for a in backbone.adapters
    ]
    with torch.no_grad():
        backbone(image)
    for hook in hooks:
        hook.remove()
    return counts


# -- adapters and the stage plan ---------------------------------------------
def test_stage_sum_adapter_sizes_zero_init_and_formula():
    adapter = StageSumAdapter(768)
    sizes = {
        name: sum(p.numel() for p in m.parameters())
        for name, m in adapter.named_children()
    }
    assert sizes == dict(
        down1=49216, down2=2080, up1=2112, down3=6208, up2=49920)
    assert sum(sizes.values()) == 109536
    x = torch.randn(2, 5, 768)
    assert torch.equal(adapter(x), torch.zeros(2, 5, 768))
    with torch.no_grad():
        for param in adapter.parameters():
            param.normal_(std=0.05)
    h0 = F.relu(adapter.down1(x))
    s1 = adapter.down2(h0)
    h = adapter.down3(torch.cat([s1, adapter.up1(s1)], -1)) + h0
    torch.testing.assert_close(adapter(x), adapter.up2(h))
    adapter.init_weights()
    assert not adapter(x).any()


def test_paper_adapter_one_down_projection_per_input():
    adapter = PaperDenseAdapter(32, num_inputs=3, hidden_dims=8)
    assert [d.bias is not None for d in adapter.down] == [True, False, False]
    x, earlier = torch.randn(2, 4, 32), [torch.randn(2, 4, 32)] * 2
    assert not adapter(x, earlier).any()  # zero at init
    with torch.no_grad():
        adapter.up.weight.normal_()
    hidden = sum(d(t) for d, t in zip(adapter.down, [x, *earlier]))
    torch.testing.assert_close(adapter(x, earlier), adapter.up(F.relu(hidden)))
    with pytest.raises(ValueError, match='expected 2 earlier'):
        adapter(x, earlier[:1])


def test_stage_plan_is_the_reference_table_and_checks_keep_layers():
    summed, ends = stage_sum_schedule((9, 3, 6), 12)
    assert [i for i, e in enumerate(ends) if e] == [2, 5, 8, 11]
    assert [i for i, s in enumerate(summed) if not s] == [11]  # DA11 left out
    for layers in [(), (0, 3)]:
        with pytest.raises(ValueError, match='keep_layers'):
            stage_sum_schedule(layers, 12)
        with pytest.raises(ValueError, match='keep_layers'):
            SparseTuningViT(**TINY12, keep_layers=layers)
    SparseTuningViT(**TINY12, keep_layers=(), dense='paper')  # no stages
    with pytest.raises(ValueError, match="dense must be one of"):
        SparseTuningViT(**TINY12, dense='dense')
    with pytest.raises(ValueError, match="'featmap'"):
        SparseTuningViT(**TINY12, out_type='featmap')
    model = SparseTuningViT(**TINY12)
    model.set_keep_layers([0, 5])  # later, e.g. by hand: checked at forward
    with pytest.raises(ValueError, match=r'got \[0, 5\]'):
        model(torch.randn(1, 3, 32, 32))


# -- the stage-sum forward --------------------------------------------------
def _reference_stage_sums(model: SparseTuningViT, image: torch.Tensor):
    """The released code's block loop, transcribed for 12 blocks, keep
    layers 3, 6, 9 (docs/methods/sparse_tuning.md §2a table); [CLS] feature."""
    x = model._embed(image)[0]
    stage0, stage1, stage2, stage3 = x, [], [], []
    for i, layer in enumerate(model.layers):
        if i in (3, 6, 9):
            attn, scores = model._attention_with_cls_scores(
                layer.attn, layer.ln1(x))
            x = x + attn
            keep = num_kept(x.shape[1] - 1, 0.7, 'ceil')
            x = keep_fuse(x, scores[:, 1:], 1, keep, 'sum').x
        else:
            x = x + layer.attn(layer.ln1(x))
        adapt = model.adapters[i](x)
        x = layer.ffn(layer.ln2(x), identity=x) + adapt
        if i < 3:
            stage0 = stage0 + adapt
        if i == 2:
            x = x + stage0
        if 2 < i < 6:
            stage1.append(adapt)
        if i == 5:
            x = x + sum(stage1)
        if 5 < i < 9:
            stage2.append(adapt)
        if i == 8:
            x = x + sum(stage2)
        if 8 < i < 11:
            stage3.append(adapt)
        if i == 11:
            x = x + sum(stage3)
    return model.ln1(x)[:, 0]


def test_stage_sum_forward_matches_the_reference_loop():
    torch.manual_seed(0)
    model = SparseTuningViT(**TINY12)
    _randomise_adapters(model)
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            model(image)[0], _reference_stage_sums(model, image))
    assert _adapter_token_counts(model, image) == TINY_TOKENS


def test_zero_adapters_leave_only_the_re_added_embeddings():
    """At init every adapter outputs 0, so the stage sums reduce to the
    embeddings added again after block 2: the token keep/fuse ViT with that
    one extra residual -- not the plain backbone."""
    torch.manual_seed(0)
    model = SparseTuningViT(**TINY12)
    plain = TokenKeepFuseViT(
        **TINY12,
        keep_rate=0.7,
        keep_layers=(3, 6, 9),
        keep_round='ceil',
        fuse='sum')
    missing, unexpected = plain.load_state_dict(
        model.state_dict(), strict=False)
    assert missing == [] and all(k.startswith('adapters.') for k in unexpected)
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ours, without = model(image)[0], plain(image)[0]
        embeddings = {}
        hooks = [
            plain.layers[0].register_forward_pre_hook(
                lambda m, args: embeddings.update(x=args[0])),
            plain.layers[2].register_forward_hook(
                lambda m, args, out: out + embeddings['x']),
        ]
        expected = plain(image)[0]
    for hook in hooks:
        hook.remove()
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    assert not torch.allclose(ours, without, atol=1e-3)


# -- the paper variant -------------------------------------------------------
def test_paper_variant_zero_init_equals_token_keep_fuse_vit():
    torch.manual_seed(0)
    model = SparseTuningViT(**TINY12, dense='paper')
    plain = TokenKeepFuseViT(
        **TINY12,
        keep_rate=0.7,
        keep_layers=(3, 6, 9),
        keep_round='ceil',
        fuse='sum')
    plain.load_state_dict(model.state_dict(), strict=False)
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            model(image)[0], plain(image)[0], rtol=0, atol=1e-6)


def test_paper_variant_reads_earlier_adapters_through_the_same_selection():
    torch.manual_seed(0)
    model = SparseTuningViT(**TINY12, dense='paper')
    _randomise_adapters(model)
    assert [len(a.down) for a in model.adapters] == list(range(1, 13))
    outputs, inputs, selections = {}, {}, {}
    for i, adapter in enumerate(model.adapters):
        adapter.register_forward_hook(
            lambda m, args, out, i=i: outputs.update({i: out}))
        adapter.register_forward_pre_hook(  # copy: the list grows later
            lambda m, args, i=i: inputs.update({i: (args[0], [*args[1]])}))
    select = model._attend_and_select

    def spy(index, *args):
        result = select(index, *args)
        selections[index] = result[3]
        return result

    model._attend_and_select = spy
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    for i, (x, earlier) in inputs.items():
        assert x.shape[1] == TINY_TOKENS[i]
        assert [e.shape for e in earlier] == [x.shape] * i
    # Block 3 prunes: the outputs of adapters 0-2 enter adapter 3 reduced
    # with the stream's kept indices and fusion weights.
    scores, keep = selections[3]
    for j in range(3):
        expected = keep_fuse(outputs[j], scores, 1, keep, 'sum').x
        torch.testing.assert_close(inputs[3][1][j], expected)


# -- trainable set and gradients ---------------------------------------------
@pytest.mark.parametrize('dense', ['stage_sum', 'paper'])
def test_gradient_reaches_only_the_adapters_and_the_head(dense):
    torch.manual_seed(0)
    model = _classifier(
        dict(type='SparseTuningViT', dense=dense, **TINY12),
        num_classes=5,
        in_channels=32)
    _randomise_adapters(model.backbone)
    logits = model(torch.randn(4, 3, 32, 32), mode='tensor')
    F.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    for name, param in model.named_parameters():
        trains = name.startswith(('backbone.adapters.', 'head.'))
        assert param.requires_grad == trains, name
        if trains:  # every trainable tensor is used (DDP, no unused)
            assert param.grad is not None and param.grad.abs().sum() > 0, \
                name
        else:
            assert param.grad is None, name


def test_trainable_set_is_fixed_at_construction():
    """DDP safety: nothing after ``__init__`` changes ``requires_grad``."""
    model = _classifier(
        dict(type='SparseTuningViT', **TINY12), num_classes=5, in_channels=32)

    def trainable():
        return {n: p.requires_grad for n, p in model.named_parameters()}

    at_construction = trainable()
    model.init_weights()
    model.train()
    model.eval()
    model.train()
    model(torch.randn(2, 3, 32, 32), mode='tensor').sum().backward()
    model.load_state_dict(model.state_dict())
    model.backbone.set_keep_layers([2, 5, 8])
    with model.backbone.token_selection_disabled():
        model(torch.randn(2, 3, 32, 32), mode='tensor')
    assert trainable() == at_construction
    assert {n
            for n, t in at_construction.items() if t} == {
                n
                for n, _ in model.named_parameters()
                if n.startswith(('backbone.adapters.', 'head.'))
            }


# -- head --------------------------------------------------------------------
def test_bn_linear_head():
    head = BNLinearClsHead(num_classes=10, in_channels=32)
    head.init_weights()
    bn = head.bn
    assert (bn.affine, bn.eps, list(bn.parameters())) == (False, 1e-6, [])
    assert not head.fc.bias.any() and head.fc.weight.std() < 0.02
    feats = (torch.randn(16, 32) * 5 + 3, )
    normed = head.pre_logits(feats)
    torch.testing.assert_close(
        normed.mean(0), torch.zeros(32), atol=1e-5, rtol=0)
    assert head(feats).shape == (16, 10)
    plain = BNLinearClsHead(num_classes=10, in_channels=32, with_bn=False)
    assert plain.bn is None and plain.pre_logits(feats) is feats[-1]


# -- ViT-B/16: tokens, parameters, FLOPs -------------------------------------
@pytest.fixture(scope='module')
def vit_b():
    model = _classifier(dict(type='SparseTuningViT', **VIT_B))
    model.eval()
    return model


def test_vit_b_defaults_tokens_and_trainable_parameters(vit_b):
    backbone = vit_b.backbone
    assert (backbone.keep_rate, backbone.keep_layers, backbone.keep_round,
            backbone.fuse, backbone.dense) == (0.7, [3, 6, 9], 'ceil', 'sum',
                                               'stage_sum')
    assert _adapter_token_counts(backbone, torch.randn(1, 3, 224, 224)) == \
        [197] * 3 + [140] * 3 + [100] * 3 + [72] * 3
    params = count_parameters(vit_b)
    assert params['head'] == 768 * 100 + 100  # the BN has no parameters
    assert params['trainable'] - params['head'] == 1_314_432
    paper = SparseTuningViT(**VIT_B, dense='paper')
    # 12 x (64 + 49,920) + 78 x 49,152: one 768x64 down-projection per
    # input of every adapter, bias only on the stream's.
    assert sum(p.numel() for p in paper.parameters()
               if p.requires_grad) == 4_433_664


def test_vit_b_gflops_between_pruned_and_dense(vit_b):
    ours = count_flops(vit_b, backbone_only=True)
    no_adapters = count_flops(
        _classifier(
            dict(
                type='TokenKeepFuseViT',
                keep_rate=0.7,
                keep_layers=(3, 6, 9),
                keep_round='ceil',
                fuse='sum',
                **VIT_B)),
        backbone_only=True)
    print(f'\nSparse-Tuning ViT-B/16 @224, rho 0.7 @ 3,6,9: '
          f'{ours / 1e9:.3f} GFLOPs; without adapters '
          f'{no_adapters / 1e9:.3f}; dense 17.582')
    assert no_adapters < ours < 17.58e9
    # The adapters' matmuls on the post-pruning tokens (3 blocks each at
    # 197, 140, 100, 72 tokens), 108,544 MACs per token.
    assert ours - no_adapters == 3 * (197 + 140 + 100 + 72) * 108_544


def test_embedded_config_learns_a_generated_task(mini_vtab, tmp_path):
    """The demo config end to end on `texture` (48 + 16 training images).
    Tests have no pre-trained tiny ViT (``make demo`` makes one), and a
    random frozen one generalises little from 64 images, so the check is
    that the adapters and the head learn: top-1 on the training images."""
    cfg = Config.fromfile(EMBEDDED)
    set_task(cfg, 'texture', 6, data_root=mini_vtab)
    cfg.model.backbone.init_cfg = None  # a random frozen tiny ViT
    cfg.test_dataloader.dataset.split = 'train800val200'
    cfg.train_cfg.max_epochs = cfg.train_cfg.val_interval = 8
    cfg.default_hooks.checkpoint.interval = 8
    cfg.work_dir = str(tmp_path)
    cfg.log_level = 'WARNING'
    runner = Runner.from_cfg(cfg)
    runner.train()
    backbone = runner.model.backbone
    assert type(backbone) is SparseTuningViT
    assert backbone.keep_layers == [1, 3, 5]
    # 6 classes: chance is 16.7%.
    assert runner.test()['accuracy/top1'] > 50
