"""fp32 optimizer wrapper with exact masked updates."""
from mmengine.optim import OptimWrapper
from mmpretrain.registry import OPTIM_WRAPPERS

from .masked_update_mixin import MaskedUpdateMixin


@OPTIM_WRAPPERS.register_module()
class MaskedOptimWrapper(MaskedUpdateMixin, OptimWrapper):
    """``OptimWrapper`` that, once armed, updates only selected entries.

    Built by ``FisherMaskOptimWrapperConstructor`` (which switches
    ``type='OptimWrapper'`` to this class); see
    :class:`~mmtrpts.engine.optimizers.masked_update_mixin.MaskedUpdateMixin`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_masked_state()
