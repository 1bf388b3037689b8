"""CheckpointHook whose checkpoint files are never half-written."""
import glob
import os
import os.path as osp

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmpretrain.registry import HOOKS

PART_SUFFIX = '.part'


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """MMEngine's ``CheckpointHook``, writing each file atomically.

    A checkpoint is written under a temporary name (``epoch_3.pth.part``)
    and renamed to its final name only when complete (``os.replace``, atomic
    on POSIX), so a run killed while saving leaves the previous complete
    checkpoint and ``last_checkpoint`` pointing at it: ``--resume`` continues
    from there.  Leftover ``.part`` files of a killed save are removed when
    training starts again.  Remote back-ends (``backend_args``) are written
    as MMEngine writes them.  Every argument is ``CheckpointHook``'s.

    Example:
        >>> default_hooks = dict(checkpoint=dict(
        ...     type='AtomicCheckpointHook', interval=1, max_keep_ckpts=2))
    """

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if is_main_process() and isinstance(self.file_backend, LocalBackend):
            for part in glob.glob(osp.join(self.out_dir, '*' + PART_SUFFIX)):
                os.remove(part)
                print_log(f'Removed {part}, left by a save that did not '
                          'finish', logger='current')

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        if not isinstance(self.file_backend, LocalBackend):
            super()._save_checkpoint_with_step(runner, step, meta)
            return
        save = runner.save_checkpoint

        def save_then_rename(out_dir, filename, *args, **kwargs):
            save(out_dir, filename + PART_SUFFIX, *args, **kwargs)
            if is_main_process():
                os.replace(osp.join(out_dir, filename + PART_SUFFIX),
                           osp.join(out_dir, filename))

        runner.save_checkpoint = save_then_rename
        try:
            super()._save_checkpoint_with_step(runner, step, meta)
        finally:
            del runner.save_checkpoint  # back to the class's method
