from .class_count_check_hook import ClassCountCheckHook
from .fisher_selection_hook import FisherSelectionHook

__all__ = ['ClassCountCheckHook', 'FisherSelectionHook']
