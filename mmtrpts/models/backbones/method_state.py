"""A plain ViT checkpoint loaded into a backbone that adds its own tensors."""
from typing import List, Set

from mmengine.logging import print_log


class MethodStateMixin:
    """One short line, not a WARNING per key, for the method's own tensors.

    Fine-tuning backbones (RLRR, Sparse-Tuning, SPT) add tensors to a
    ``VisionTransformer`` -- rescaling vectors, adapters, LoRA branches --
    and start from a pre-trained *plain* ViT (``init_cfg=dict(
    type='Pretrained', ...)``), which cannot hold them.  MMEngine's loader
    lists every one of them in a WARNING ("missing keys in source
    state_dict: ..."; hundreds of names on ViT-B).  During
    :meth:`init_weights`, when the checkpoint holds *none* of the method's
    tensors, they are taken out of that list and one INFO line says so.
    Every other missing key stays in MMEngine's WARNING: a backbone tensor
    that the checkpoint should have had, or the method's tensors of a
    checkpoint that holds only some of them.  Loads after initialisation
    (``load_from``, resuming, ``tools/test.py``) are not affected.

    A subclass lists its tensors in :meth:`method_state_keys` and names them
    in :attr:`method_state_desc`; the mixin comes first among the bases
    (``class RLRRViT(MethodStateMixin, VisionTransformer)``).
    """

    #: The method's tensors in words, for the log line.
    method_state_desc = "the method's own tensors"

    def method_state_keys(self) -> Set[str]:
        """Keys of ``state_dict()`` that a plain ViT checkpoint cannot
        have."""
        raise NotImplementedError

    def init_weights(self) -> None:
        absent: List[str] = []

        def take_method_keys(module, incompatible_keys) -> None:
            expected = self.method_state_keys()
            missing = incompatible_keys.missing_keys
            found = [key for key in missing if key in expected]
            if found and len(set(found)) == len(expected):
                missing[:] = [key for key in missing if key not in expected]
                absent.extend(found)

        handle = self.register_load_state_dict_post_hook(take_method_keys)
        try:
            super().init_weights()
        finally:
            handle.remove()
        if absent:
            checkpoint = _pretrained_checkpoint(self.init_cfg)
            source = f' {checkpoint}' if checkpoint else ''
            print_log(
                f'{type(self).__name__}: the pre-trained checkpoint{source} '
                f'holds none of the {len(absent)} tensors of '
                f'{self.method_state_desc} (a plain ViT checkpoint cannot); '
                'they keep their initialisation',
                logger='current')


def _pretrained_checkpoint(init_cfg) -> str:
    """The ``checkpoint`` of a ``Pretrained`` entry of ``init_cfg``."""
    cfgs = init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]
    for cfg in cfgs:
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            return str(cfg.get('checkpoint', ''))
    return ''
