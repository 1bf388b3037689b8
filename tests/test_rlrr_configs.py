"""RLRR's embedded config (the benchmark configs: test_method_configs.py)."""
from conftest import write_tiny_config
from mmengine.config import Config
from mmengine.runner import Runner


def test_embedded_rlrr_learns_texture(mini_vtab, tmp_path):
    """A random tiny ViT (no pretrained weights) adapted by RLRR only."""
    cfg = Config.fromfile(
        write_tiny_config(
            str(tmp_path / 'cfg.py'),
            mini_vtab,
            base='vit-tiny_rlrr_mini-vtab.py',
            max_epochs=15))
    cfg.work_dir = str(tmp_path / 'work')
    cfg.train_cfg.val_interval = 15
    cfg.log_level = 'WARNING'
    runner = Runner.from_cfg(cfg)
    runner.train()
    backbone = runner.model.backbone
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    assert trainable and all(
        n.endswith(('scale_left', 'scale_right', 'shift', 'scale'))
        for n in trainable)
    assert backbone.rlrr_init == 'identity'
    assert backbone.layers[0].attn.qkv.scale_left.any()  # trained from 0
    # 6 classes: chance is 16.7%.
    assert runner.test()['accuracy/top1'] > 40
