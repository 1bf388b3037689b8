from .bn_linear_cls_head import BNLinearClsHead

__all__ = ['BNLinearClsHead']
