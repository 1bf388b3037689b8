"""Fail early when a dataset's class count disagrees with the model."""
from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS
from mmpretrain.utils import get_ori_model


def _dataset_description(dataset) -> str:
    for attr in ('ann_file', 'data_root'):
        value = getattr(dataset, attr, None)
        if value:
            return f'{type(dataset).__name__}({attr}={value!r})'
    return type(dataset).__name__


@HOOKS.register_module()
class ClassCountCheckHook(Hook):
    """Check ``len(dataset.metainfo['classes'])`` against the model.

    The head's ``num_classes`` (and the data preprocessor's, used by batch
    augments) must equal the number of classes of every dataset the run
    uses; otherwise training would silently ignore classes or fail deep in
    the loss with an index error.

    Example:
        >>> custom_hooks = [dict(type='ClassCountCheckHook')]
    """
    priority = 'VERY_HIGH'

    def _check(self, runner, loop_name: str) -> None:
        loop = getattr(runner, loop_name, None)
        dataset = getattr(getattr(loop, 'dataloader', None), 'dataset', None)
        classes = (getattr(dataset, 'metainfo', None) or {}).get('classes')
        if classes is None:
            return
        model = get_ori_model(runner.model)
        expected = {
            'model.head.num_classes':
            getattr(getattr(model, 'head', None), 'num_classes', None),
            'model.data_preprocessor.num_classes':
            getattr(getattr(model, 'data_preprocessor', None), 'num_classes',
                    None),
        }
        for key, value in expected.items():
            if value is not None and value != len(classes):
                raise ValueError(
                    f'{_dataset_description(dataset)} has {len(classes)} '
                    f'classes but {key} is {value}; set {key}={len(classes)} '
                    'in the config (or fix the dataset\'s num_classes).')

    def before_train(self, runner) -> None:
        self._check(runner, 'train_loop')

    def before_val(self, runner) -> None:
        self._check(runner, 'val_loop')

    def before_test(self, runner) -> None:
        self._check(runner, 'test_loop')
