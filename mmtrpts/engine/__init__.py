from .hooks import *  # noqa: F401,F403
from .optimizers import *  # noqa: F401,F403
from .parameter_selection import ParameterSelection, save_selection
from .training_form import (TrainingForm, apply_training_form,
                            gradient_elements)

__all__ = [
    'ParameterSelection', 'TrainingForm', 'apply_training_form',
    'gradient_elements', 'save_selection'
]
