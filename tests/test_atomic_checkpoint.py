"""AtomicCheckpointHook: a save that dies never leaves a checkpoint file."""
import os.path as osp

import pytest
from mmengine.logging import MessageHub, MMLogger

from mmtrpts.engine.hooks import AtomicCheckpointHook


class _Runner:
    """What CheckpointHook reads of a runner, with a save that can die."""

    def __init__(self, work_dir: str, die: bool):
        self.work_dir = work_dir
        self.message_hub = MessageHub.get_instance(f'atomic-{die}')
        self.logger = MMLogger.get_instance(f'atomic-{die}')
        self.die = die

    def save_checkpoint(self, out_dir, filename, *args, **kwargs):
        with open(osp.join(out_dir, filename), 'wb') as f:
            f.write(b'half a checkpoint')
            if self.die:
                raise RuntimeError('killed while saving')
            f.write(b' and the rest')


@pytest.mark.parametrize('die', [True, False])
def test_a_save_that_dies_leaves_only_a_part_file(tmp_path, die):
    runner = _Runner(str(tmp_path), die)
    hook = AtomicCheckpointHook(interval=1)
    hook.before_train(runner)
    final = tmp_path / 'epoch_3.pth'
    if die:
        with pytest.raises(RuntimeError, match='killed while saving'):
            hook._save_checkpoint_with_step(runner, 3, meta={})
        assert not final.exists() and not (tmp_path / 'last_checkpoint').exists()
        assert (tmp_path / 'epoch_3.pth.part').exists()
        AtomicCheckpointHook(interval=1).before_train(runner)  # next run
        assert not (tmp_path / 'epoch_3.pth.part').exists()
    else:
        hook._save_checkpoint_with_step(runner, 3, meta={})
        assert final.read_bytes() == b'half a checkpoint and the rest'
        assert (tmp_path / 'last_checkpoint').read_text() == str(final)
        assert not (tmp_path / 'epoch_3.pth.part').exists()
        assert runner.save_checkpoint.__func__ is _Runner.save_checkpoint
