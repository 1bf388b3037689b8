"""Linear classification head with a non-affine BatchNorm pre-norm."""
from typing import Optional, Tuple

from mmpretrain.models import LinearClsHead
from mmpretrain.registry import MODELS
from torch import Tensor, nn


@MODELS.register_module()
class BNLinearClsHead(LinearClsHead):
    """``LinearClsHead`` with an optional ``BatchNorm1d`` before the fc.

    The head of Sparse-Tuning (Liu et al., arXiv 2405.14700;
    docs/methods/sparse_tuning.md §2d), which reuses the MAE linear-probe
    recipe: features are normalised by a ``BatchNorm1d(in_channels,
    affine=False, eps=1e-6)`` (batch statistics in training, running
    statistics at test time; no parameters), then classified by a linear layer
    whose weight is drawn from a truncated normal with std 0.01 and whose bias
    is zero.  With ``with_bn=False`` it is a ``LinearClsHead`` with that
    initialisation.

    In training the BatchNorm needs more than one sample per GPU batch.

    Example:
        >>> head = dict(
        ...     type='BNLinearClsHead', num_classes=100, in_channels=768,
        ...     with_bn=True,
        ...     loss=dict(type='CrossEntropyLoss', loss_weight=1.0))

    Args:
        num_classes (int): Number of classes.
        in_channels (int): Feature channels.
        with_bn (bool): Normalise the features first. Defaults to True (the
            reference).
        init_cfg (dict, optional): Defaults to trunc-normal(0.01) weights
            and zero bias for the Linear.
        **kwargs: ``ClsHead`` arguments (``loss``, ``topk``, ``cal_acc``).
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 with_bn: bool = True,
                 init_cfg: Optional[dict] = dict(
                     type='TruncNormal', layer='Linear', std=0.01, bias=0.),
                 **kwargs):
        super().__init__(num_classes, in_channels, init_cfg=init_cfg,
                         **kwargs)
        self.bn = (nn.BatchNorm1d(in_channels, affine=False, eps=1e-6)
                   if with_bn else None)

    def pre_logits(self, feats: Tuple[Tensor]) -> Tensor:
        """The last stage's feature, batch-normalised when ``with_bn``."""
        feat = feats[-1]
        return feat if self.bn is None else self.bn(feat)
