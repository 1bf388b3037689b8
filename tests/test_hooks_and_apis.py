"""ClassCountCheckHook, TrainableParamsHook and the tools' config helpers."""
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MessageHub

from mmtrpts.apis import (apply_loader_flags, apply_train_flags,
                          resolve_work_dir, set_task)
from mmtrpts.engine.hooks import ClassCountCheckHook, TrainableParamsHook
from mmtrpts.engine.hooks import trainable_params_hook


def _runner(num_dataset_classes, head_classes, preprocessor_classes=None):
    dataset = SimpleNamespace(
        metainfo=dict(classes=[str(i) for i in range(num_dataset_classes)]),
        ann_file='/data/task/train800val200.txt')
    model = SimpleNamespace(
        head=SimpleNamespace(num_classes=head_classes),
        data_preprocessor=SimpleNamespace(num_classes=preprocessor_classes))
    loop = SimpleNamespace(dataloader=SimpleNamespace(dataset=dataset))
    return SimpleNamespace(model=model, train_loop=loop, val_loop=loop,
                           test_loop=loop)


def test_class_count_hook_accepts_matching_counts():
    ClassCountCheckHook().before_train(_runner(6, 6, 6))
    ClassCountCheckHook().before_test(_runner(6, 6, None))


def test_class_count_hook_names_dataset_and_key():
    with pytest.raises(
            ValueError,
            match=r"SimpleNamespace\(ann_file='/data/task/train800val200\.txt'"
            r'\) has 6 classes but model\.head\.num_classes is 5'):
        ClassCountCheckHook().before_train(_runner(6, 5))
    with pytest.raises(ValueError,
                       match='model.data_preprocessor.num_classes is 8'):
        ClassCountCheckHook().before_val(_runner(6, 6, 8))


def _cfg():
    dataset = dict(type='VTAB1k', data_root='a', task='x', num_classes=2)
    return Config(
        dict(
            model=dict(head=dict(num_classes=2),
                       data_preprocessor=dict(num_classes=2)),
            data_preprocessor=dict(num_classes=2),
            train_dataloader=dict(dataset=dict(dataset), num_workers=0,
                                  persistent_workers=True),
            val_dataloader=dict(dataset=dict(dataset), num_workers=2,
                                persistent_workers=True, pin_memory=True),
            test_dataloader=None,
            val_cfg=dict(),
            val_evaluator=dict(type='Accuracy'),
            optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
            auto_scale_lr=dict(base_batch_size=32)))


def test_set_task_updates_every_place():
    cfg = _cfg()
    set_task(cfg, 'location', 8, data_root='/root')
    for name in ('train_dataloader', 'val_dataloader'):
        assert cfg[name].dataset.task == 'location'
        assert cfg[name].dataset.num_classes == 8
        assert cfg[name].dataset.data_root == '/root'
    assert cfg.model.head.num_classes == 8
    assert cfg.model.data_preprocessor.num_classes == 8
    assert cfg.data_preprocessor.num_classes == 8


def test_set_task_needs_a_task_argument():
    cfg = _cfg()
    cfg.val_dataloader.dataset = dict(type='ImageNet')
    with pytest.raises(KeyError, match=r'val_dataloader\.dataset \(ImageNet'):
        set_task(cfg, 'location', 8)


def test_train_flags():
    cfg = _cfg()
    apply_train_flags(cfg, resume='auto', amp=True, no_validate=True,
                      auto_scale_lr=True)
    assert cfg.resume is True and cfg.load_from is None
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    assert cfg.val_cfg is None and cfg.val_dataloader is None
    assert cfg.auto_scale_lr.enable is True
    cfg = _cfg()
    apply_train_flags(cfg, resume='/w/epoch_3.pth')
    assert cfg.resume is True and cfg.load_from == '/w/epoch_3.pth'
    cfg.auto_scale_lr = None
    with pytest.raises(ValueError, match='base_batch_size'):
        apply_train_flags(cfg, auto_scale_lr=True)


def test_loader_flags_and_work_dir():
    cfg = _cfg()
    apply_loader_flags(cfg)
    assert cfg.train_dataloader.persistent_workers is False  # 0 workers
    assert cfg.val_dataloader.persistent_workers is True
    apply_loader_flags(cfg, no_pin_memory=True, no_persistent_workers=True)
    assert cfg.val_dataloader.pin_memory is False
    assert cfg.val_dataloader.persistent_workers is False
    resolve_work_dir(cfg, 'configs/trpts/vit-b_cub.py', None)
    assert cfg.work_dir == './work_dirs/vit-b_cub'
    resolve_work_dir(cfg, 'configs/trpts/vit-b_cub.py', '/tmp/w')
    assert cfg.work_dir == '/tmp/w'


def test_trainable_params_hook_counts_requires_grad_once(monkeypatch):
    lines = []
    monkeypatch.setattr(trainable_params_hook, 'print_log',
                        lambda msg, logger=None: lines.append(msg))
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    model[0].requires_grad_(False)
    hub = MessageHub.get_instance('test_trainable_params_hook')
    runner = SimpleNamespace(model=model, message_hub=hub)
    TrainableParamsHook().before_train(runner)
    assert hub.get_info('trainable_params') == 8
    assert lines == ['Trainable parameters: 8 / 23 (34.783% of the model; '
                     'all parameters with requires_grad)']
    # A selection method already logged its own count: stay silent.
    hub.update_info('trainable_params', 5)
    TrainableParamsHook().before_train(runner)
    assert len(lines) == 1 and hub.get_info('trainable_params') == 5
