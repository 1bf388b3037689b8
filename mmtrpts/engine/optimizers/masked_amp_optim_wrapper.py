"""AMP optimizer wrapper with exact masked updates."""
from mmengine.optim import AmpOptimWrapper
from mmpretrain.registry import OPTIM_WRAPPERS

from .masked_update_mixin import MaskedUpdateMixin


@OPTIM_WRAPPERS.register_module()
class MaskedAmpOptimWrapper(MaskedUpdateMixin, AmpOptimWrapper):
    """``AmpOptimWrapper`` that, once armed, updates only selected entries.

    The gather runs at the start of ``step()``, before ``AmpOptimWrapper``
    unscales, so unscaling and clipping act on the selected gradients.  The
    loss scaler inspects only those: an inf in an unselected entry is not
    detected (harmless for the weights, unlike dense AMP), and dense
    gradients stay scaled after ``step()``.  mmengine builds
    ``AmpOptimWrapper`` on CUDA (and a few other accelerators) only.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_masked_state()
