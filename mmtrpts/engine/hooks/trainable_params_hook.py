"""Log how many parameters a run trains, in one line for every method."""
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmpretrain.registry import HOOKS
from mmpretrain.utils import get_ori_model

from ...complexity.params import count_parameters


@HOOKS.register_module()
class TrainableParamsHook(Hook):
    """Log ``Trainable parameters: a / b (x% of the model)`` before training.

    Methods that train a selection of entries (``FisherSelectionHook``,
    SPT's constructor) log their own count, which only they know, and put
    it in the message hub (``trainable_params``); this hook runs after them
    (priority ``LOW``) and then stays silent.  For every other method --
    full fine-tuning, linear probing, adapters, RLRR -- it counts the
    parameters with ``requires_grad`` and logs the same line, so that the
    results tool (``tools/analysis_tools/collect_results.py``) finds the
    trainable share of every run.  Enabled in
    ``configs/_base_/default_runtime.py``::

        default_hooks = dict(trainable_params=dict(type='TrainableParamsHook'))
    """

    priority = 'LOW'

    def before_train(self, runner) -> None:
        if runner.message_hub.get_info('trainable_params') is not None:
            return
        model = get_ori_model(runner.model)
        counts = count_parameters(model)
        total, trainable = counts['total'], counts['trainable']
        print_log(f'Trainable parameters: {trainable:,} / {total:,} '
                  f'({100 * trainable / total:.3f}% of the model; all '
                  'parameters with requires_grad)', logger='current')
        runner.message_hub.update_info('trainable_params', trainable)
