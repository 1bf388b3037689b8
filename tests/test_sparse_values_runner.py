"""The sparse-value training form through the real runner and launcher."""
import json
import os.path as osp
import re

import torch
from conftest import PYTHON, REPO, assert_ok, run_tool
from test_trpts_runner import _config, _log, pretrained  # noqa: F401

TRAIN = osp.join(REPO, 'tools', 'train.py')
DIST_TRAIN = osp.join(REPO, 'tools', 'dist_train.sh')

# A hook that records, after the first iteration, what DDP communicated
# (a counting comm hook registered on the wrapper the run trains with),
# what requires gradients and which frozen tensor holds a .grad.
CHECK_HOOK = '''
import gc
import json
import os.path as osp

import torch.distributed as dist
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS
from torch.nn.parallel import DistributedDataParallel
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import \\
    allreduce_hook


def _counting_hook(state, bucket):
    state['elements'] += bucket.buffer().numel()
    return allreduce_hook(None, bucket)


@HOOKS.register_module()
class GradientTrafficCheckHook(Hook):
    priority = 'LOWEST'

    def before_train(self, runner):
        self.state = dict(elements=0)
        if is_model_wrapper(runner.model):
            runner.model.register_comm_hook(self.state, _counting_hook)

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if runner.iter != 0:  # the first iteration (counted after hooks)
            return
        model = runner.model.module if is_model_wrapper(runner.model) \\
            else runner.model
        params = dict(model.named_parameters())
        rank = dist.get_rank() if dist.is_initialized() else 0
        gc.collect()
        result = dict(
            # the wrapper built with the runner is gone, reducer and all
            ddp_wrappers=sum(isinstance(o, DistributedDataParallel)
                             for o in gc.get_objects()),
            communicated=self.state['elements'],
            trainable=sum(p.numel() for p in params.values()
                          if p.requires_grad),
            dense=sum(p.numel() for p in params.values()),
            grad_elements=runner.message_hub.get_info('grad_elements'),
            frozen_with_grad=[n for n, p in params.items()
                              if not p.requires_grad and p.grad is not None],
            values=[n for n in params if n.endswith('weight_values')])
        with open(osp.join(runner.work_dir, f'check_{rank}.json'), 'w') as f:
            json.dump(result, f)
'''
ADAMW = "dict(type='AdamW', lr=1e-2, weight_decay=0.05)"
SGD = "dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=1e-4)"


def test_ddp_communicates_only_trained_entries(tmp_path, mini_vtab,
                                               pretrained):  # noqa: F811
    (tmp_path / 'traffic_check.py').write_text(CHECK_HOOK)
    hook = ("dict(type='FisherSelectionHook', target_ratio=0.1, "
            "batch_size=8, progress=False), "
            "dict(type='GradientTrafficCheckHook')")
    config = _config(
        tmp_path,
        mini_vtab,
        pretrained,
        ADAMW,
        hook,
        extra="""
custom_imports = dict(imports=['mmtrpts', 'traffic_check'],
                      allow_failed_imports=False)
""")
    work = tmp_path / 'work'
    proc = run_tool(['bash', DIST_TRAIN, config, '2', '--work-dir',
                     str(work)],
                    env_extra=dict(
                        PORT='29541',
                        PYTHON=PYTHON,
                        PYTHONPATH=f'{tmp_path}:{REPO}'))
    assert_ok(proc)
    log = _log(proc)
    assert re.search(
        r'Training form: 9 sparse-value layers, 0 tensors on '
        r'the masked path', log), log[-3000:]
    assert 'wrapped again in MMDistributedDataParallel' in log
    assert re.search(
        r'layers\.0\.attn\.qkv\.weight\s+\(96, 32\)\s+\d+\s+'
        r'sparse-value \(torch\)', log)
    for rank in (0, 1):
        check = json.loads((work / f'check_{rank}.json').read_text())
        assert check['frozen_with_grad'] == []
        assert check['ddp_wrappers'] == 1
        assert len(check['values']) == 9  # 8 block matrices + patch embed
        # every trained entry, and nothing else, is all-reduced
        assert check['communicated'] == check['trainable'] == \
            check['grad_elements']
        assert check["communicated"] < 0.3 * check["dense"]


def test_ema_clipping_accumulation_match_the_masked_path(
        tmp_path, mini_vtab, pretrained):  # noqa: F811
    # SGD: linear in the gradients, so the two forms differ by float
    # summation order only.  (AdamW amplifies that order noise into
    # lr-sized steps on entries whose true gradient is ~0, such as the key
    # part of the qkv bias; its exactness is tested on a model without such
    # entries in test_sparse_values.py.)
    runs = {}
    for form in ('sparse', 'masked'):
        hook = ("dict(type='FisherSelectionHook', target_ratio=0.2, "
                f"batch_size=16, progress=False, "
                f"sparse_values={form == 'sparse'}), "
                "dict(type='EMAHook', momentum=0.2)")
        folder = tmp_path / form
        folder.mkdir()
        config = _config(
            folder,
            mini_vtab,
            pretrained,
            SGD,
            hook,
            extra=f"""
optim_wrapper = dict(optimizer={SGD}, accumulative_counts=2,
                     clip_grad=dict(_delete_=True, max_norm=0.5))
""")
        proc = run_tool(
            [PYTHON, TRAIN, config, '--work-dir',
             str(folder / 'work')])
        assert_ok(proc)
        runs[form] = (_log(proc),
                      torch.load(
                          folder / 'work' / 'epoch_2.pth', weights_only=False))
    sparse_log, sparse = runs['sparse']
    assert 'Training form: 9 sparse-value layers' in sparse_log
    assert 'Training form: 0 sparse-value layers, 9 tensors on the masked ' \
        'path' in runs['masked'][0]
    masked = runs['masked'][1]
    assert sparse['selection']['checksum'] == masked['selection']['checksum']
    # Formats unchanged: dense keys only, in the model and in the EMA.
    assert set(sparse['state_dict']) == set(masked['state_dict'])
    assert set(sparse['ema_state_dict']) == set(masked['ema_state_dict'])
    assert not any('weight_values' in k for k in sparse['ema_state_dict'])
    base = torch.load(pretrained)['state_dict']
    indices = sparse['selection']['indices']
    for key in ('state_dict', 'ema_state_dict'):
        for name, value in sparse[key].items():
            if not torch.is_tensor(value) or not value.is_floating_point():
                continue
            torch.testing.assert_close(
                value,
                masked[key][name],
                rtol=1e-4,
                atol=1e-5,
                msg=f'{key} {name}')
            plain = name[len('module.'):] if key == 'ema_state_dict' \
                else name
            if plain in indices:  # unselected entries: still pretrained
                keep = torch.ones(value.numel(), dtype=torch.bool)
                keep[indices[plain].long()] = False
                assert torch.equal(
                    value.view(-1)[keep], base[plain].view(-1)[keep]), name
    # The checkpoint swaps the two sets: state_dict holds the averaged
    # weights, ema_state_dict the trained ones; they differ (EMA ran).
    qkv = 'backbone.layers.0.attn.qkv.weight'
    assert not torch.equal(sparse['state_dict'][qkv],
                           sparse['ema_state_dict'][f'module.{qkv}'])
