from .class_count_check_hook import ClassCountCheckHook

__all__ = ['ClassCountCheckHook']
