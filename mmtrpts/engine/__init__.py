from .hooks import *  # noqa: F401,F403
from .optimizers import *  # noqa: F401,F403
from .parameter_selection import ParameterSelection, save_selection

__all__ = ['ParameterSelection', 'save_selection']
