"""Token keep/fuse: the pure op and the TokenKeepFuseViT backbone."""
import pytest
import torch
from mmpretrain.models import VisionTransformer

from mmtrpts.models import TokenKeepFuseViT
from mmtrpts.models.utils import cls_attention, keep_fuse, num_kept

TINY = dict(arch=dict(embed_dims=32, num_layers=4, num_heads=4,
                      feedforward_channels=64), img_size=32, patch_size=4)


def test_num_kept_floor_ceil_and_exact_decimals():
    assert num_kept(196, 0.7, 'ceil') == 138
    assert num_kept(196, 0.7, 'floor') == 137
    assert num_kept(140, 0.7, 'floor') == 98  # 0.7 * 140 is exactly 98
    assert num_kept(196, 0.95, 'floor') == 186
    assert num_kept(1, 0.5, 'floor') == 1  # at least one token
    with pytest.raises(ValueError, match='keep_rate'):
        num_kept(10, 1.5)
    with pytest.raises(ValueError, match="'round'"):
        num_kept(10, 0.5, 'round')


def test_cls_attention_is_the_cls_row_of_full_attention():
    torch.manual_seed(0)
    q, k = torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 8)
    full = ((q @ k.transpose(-2, -1)) * 8**-0.5).softmax(-1)
    expected = full[:, :, 0].mean(1)
    torch.testing.assert_close(cls_attention(q[:, :, :1], k, 8**-0.5),
                               expected, rtol=0, atol=1e-7)


def _tokens():
    # 1 extra token + 4 candidates with distinct values, C = 2
    x = torch.tensor([[[9., 9.], [1., 0.], [2., 0.], [3., 0.], [4., 1.]]])
    scores = torch.tensor([[0.1, 0.4, 0.2, 0.3]])
    return x, scores


@pytest.mark.parametrize('fuse', ['norm', 'sum', 'drop'])
def test_keep_fuse_exact_values(fuse):
    x, scores = _tokens()
    result = keep_fuse(x, scores, num_extra=1, num_keep=2, fuse=fuse)
    # kept: candidates 1 and 3 (scores 0.4, 0.3), in ascending order
    assert result.kept.tolist() == [[1, 3]]
    assert torch.equal(result.x[:, :3], torch.tensor([[[9., 9.], [2., 0.],
                                                       [4., 1.]]]))
    if fuse == 'drop':
        assert result.x.shape == (1, 3, 2)
        assert result.weights.tolist() == [[0., 1., 1.]]
        return
    # fused from candidates 0 and 2 (values [1,0], [3,0]; scores .1, .2)
    total = 0.1 * torch.tensor([1., 0.]) + 0.2 * torch.tensor([3., 0.])
    if fuse == 'norm':
        total = total / (0.1 + 0.2 + 1e-6)
    torch.testing.assert_close(result.x[0, 3], total, rtol=0, atol=1e-6)
    assert result.weights.tolist() == [[0., 1., 1., 2.]]


def test_keep_fuse_ties_go_to_the_lower_index_and_assignment():
    x = torch.arange(10.).reshape(1, 5, 2)
    scores = torch.tensor([[0.2, 0.2, 0.2, 0.1]])
    assignment = torch.tensor([[1, 2, 3, 4]])
    result = keep_fuse(x, scores, 1, 2, 'norm', assignment=assignment)
    assert result.kept.tolist() == [[0, 1]]
    assert result.assignment.tolist() == [[1, 2, 3, 3]]  # last two fused
    dropped = keep_fuse(x, scores, 1, 2, 'drop', assignment=assignment)
    assert dropped.assignment.tolist() == [[1, 2, -1, -1]]


def test_gradient_reaches_scores_through_the_fused_token():
    x, _ = _tokens()
    q = torch.randn(1, 1, 1, 4, requires_grad=True)
    k = torch.randn(1, 1, 5, 4, requires_grad=True)
    scores = cls_attention(q, k, 0.5)[:, 1:]
    fused = keep_fuse(x, scores, 1, 2, 'norm').x[:, -1]
    q_grad, k_grad = torch.autograd.grad(fused.sum(), (q, k))
    assert q_grad.abs().sum() > 0 and k_grad.abs().sum() > 0


@pytest.mark.parametrize('out_type', ['cls_token', 'raw', 'avg_featmap',
                                      'featmap'])
def test_without_selection_outputs_equal_vision_transformer(out_type):
    torch.manual_seed(0)
    dense = VisionTransformer(**TINY, out_type=out_type, out_indices=(1, 3))
    ours = TokenKeepFuseViT(**TINY, out_type=out_type, out_indices=(1, 3))
    # A plain ViT's state dict: keep_layer_mask may be absent.
    missing, unexpected = ours.load_state_dict(dense.state_dict(),
                                               strict=True)
    assert missing == [] and unexpected == []
    x = torch.randn(2, 3, 32, 32)
    for a, b in zip(dense(x), ours(x)):
        assert torch.equal(a, b)


def test_same_errors_and_attributes_as_vision_transformer():
    with pytest.raises(AssertionError) as dense_error:
        VisionTransformer(arch='unknown')
    with pytest.raises(AssertionError) as our_error:
        TokenKeepFuseViT(arch='unknown')
    assert str(our_error.value) == str(dense_error.value)
    ours = TokenKeepFuseViT(arch='b', frozen_stages=2)
    assert ours.embed_dims == 768 and ours.num_layers == 12
    frozen = [n for n, p in ours.named_parameters() if not p.requires_grad]
    dense = VisionTransformer(arch='b', frozen_stages=2)
    assert frozen == [n for n, p in dense.named_parameters()
                      if not p.requires_grad]


def test_token_counts_per_block_vit_b():
    model = TokenKeepFuseViT(arch='b', img_size=224, patch_size=16,
                             keep_rate=0.7, keep_layers=(3, 6, 9),
                             keep_round='ceil', out_type='raw',
                             out_indices=(2, 3, 6, 9, 11))
    model.eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 224, 224))
    assert [o.shape[1] for o in outs] == [197, 140, 100, 72, 72]
    model.keep_round = 'floor'
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 224, 224))
    assert [o.shape[1] for o in outs] == [197, 139, 98, 69, 69]


def test_train_and_eval_select_the_same_tokens():
    torch.manual_seed(0)
    model = TokenKeepFuseViT(**TINY, keep_rate=0.5, keep_layers=(1, 2))
    x = torch.randn(2, 3, 32, 32)
    model.train()
    train_out = model(x)[0]
    model.eval()
    assert torch.equal(train_out, model(x)[0])


def test_avg_featmap_is_the_mean_over_original_patches():
    torch.manual_seed(0)
    dense = VisionTransformer(**TINY, out_type='avg_featmap')
    ours = TokenKeepFuseViT(**TINY, out_type='avg_featmap', keep_rate=1.0,
                            keep_layers=(1, ))  # selection path, no drop
    ours.load_state_dict(dense.state_dict(), strict=False)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(ours(x)[0], dense(x)[0], rtol=0, atol=1e-6)


def test_detached_scores_change_the_gradient_of_qk():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    # Not .sum(): the channel sum of the final LayerNorm output is constant.
    probe = torch.randn(32)
    grads = []
    for detach in (False, True):
        torch.manual_seed(1)
        model = TokenKeepFuseViT(**TINY, keep_rate=0.5, keep_layers=(0, ),
                                 detach_scores=detach, out_type='raw')
        (model(x)[0][:, -1] @ probe).sum().backward()
        grads.append(model.layers[0].attn.qkv.weight.grad[:64].clone())
    assert grads[0].abs().sum() > 0 and grads[1].abs().sum() > 0
    assert not torch.equal(grads[0], grads[1])  # the fused-token path


def test_featmap_with_selection_is_a_clear_error():
    with pytest.raises(ValueError, match="out_type='featmap'"):
        TokenKeepFuseViT(**TINY, out_type='featmap', keep_layers=(1, ))
    model = TokenKeepFuseViT(**TINY, out_type='featmap')
    with pytest.raises(ValueError, match="out_type='featmap'"):
        model.set_keep_layers([1])
    with pytest.raises(ValueError, match='out of range'):
        TokenKeepFuseViT(**TINY, keep_layers=(4, ))


def test_keep_layers_travel_with_the_state_dict():
    model = TokenKeepFuseViT(**TINY, keep_layers=(1, 3))
    restored = TokenKeepFuseViT(**TINY)
    assert restored.keep_layers == []
    restored.load_state_dict(model.state_dict())
    assert restored.keep_layers == [1, 3]
    with restored.token_selection_disabled():
        assert restored(torch.randn(1, 3, 32, 32))[0].shape == (1, 32)
