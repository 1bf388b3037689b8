from .atomic_checkpoint_hook import AtomicCheckpointHook
from .class_count_check_hook import ClassCountCheckHook
from .fisher_selection_hook import FisherSelectionHook
from .trainable_params_hook import TrainableParamsHook

__all__ = [
    'AtomicCheckpointHook', 'ClassCountCheckHook', 'FisherSelectionHook',
    'TrainableParamsHook'
]
