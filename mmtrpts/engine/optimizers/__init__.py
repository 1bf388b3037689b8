from .fisher_mask_constructor import FisherMaskOptimWrapperConstructor
from .masked_amp_optim_wrapper import MaskedAmpOptimWrapper
from .masked_optim_wrapper import MaskedOptimWrapper
from .spt_constructor import SPTOptimWrapperConstructor

__all__ = [
    'FisherMaskOptimWrapperConstructor', 'MaskedAmpOptimWrapper',
    'MaskedOptimWrapper', 'SPTOptimWrapperConstructor'
]
