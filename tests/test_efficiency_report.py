"""The efficiency report on a tiny ViT (no timing or memory asserted).

The whole report runs through the CLI's ``main`` in this process, with the
child-process workers (Fisher pass + selections, per-method training
memory) called in-process as well: eleven methods in fresh interpreters
would cost a minute of imports.  One test runs a worker in a real child
process, on a record the in-process selection worker saved.
"""
import contextlib
import importlib.util
import io
import json
import os.path as osp

import pytest
import torch
from conftest import REPO

from mmtrpts.complexity.flops import count_flops
from mmtrpts.efficiency import report
from mmtrpts.efficiency.common import vit_arch
from mmtrpts.efficiency.methods import METHODS, register_method
from mmtrpts.efficiency.report import (COLUMNS, RATIO_KEYS, ReportSettings,
                                       build_methods)
from mmtrpts.efficiency.token_selection import build_classifier
from mmtrpts.selection.eligibility import MASKED, assign_roles

BENCH = osp.join(REPO, 'tools', 'efficiency', 'efficiency_report.py')
DIMS, DEPTH, CLASSES, RANK = 64, 6, 10, 8
TINY = [
    '--embed-dims', str(DIMS), '--depth', str(DEPTH), '--heads', '4',
    '--img-size', '32', '--patch', '4', '--batch', '4', '--steps', '1',
    '--runs', '2', '--fisher-batches', '2', '--keep-layers', '1,3,5',
    '--num-classes', str(CLASSES), '--target-ratio', '0.05', '--device', 'cpu'
]
ORDER = ['full', 'linear', 'frozen', 'lora', 'trpts_masked', 'trpts',
         'trpts_tokens', 'gps', 'spt', 'rlrr', 'sparse_tuning']
ROW_KEYS = ('step_time_ms', 'train_memory_bytes', 'grad_elements',
            'optimizer_state_elements', 'images_per_second',
            'trainable_params', 'ratios', 'bound_ratios')


def _in_process(worker: str, out: str, **kwargs) -> dict:
    """``in_fresh_process`` without the fresh process (JSON round trip)."""
    return json.loads(json.dumps(getattr(report, worker)(**kwargs)))


@pytest.fixture(scope='module')
def tiny_report(tmp_path_factory):
    """The CLI's stdout and JSON for the tiny ViT."""
    spec = importlib.util.spec_from_file_location('efficiency_report_cli',
                                                  BENCH)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = str(tmp_path_factory.mktemp('report') / 'results.json')
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report, 'in_fresh_process', _in_process)
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            cli.main([*TINY, '--out', out])
    with open(out) as f:
        return stdout.getvalue(), json.load(f)


def _dense_model():
    return build_classifier(dict(type='VisionTransformer'),
                            vit_arch('b', DIMS, DEPTH, 4), 32, 4, CLASSES,
                            'cpu', 0)


def test_rows_in_order_and_printed(tiny_report):
    stdout, results = tiny_report
    methods = results['methods']
    assert list(METHODS) == ORDER
    assert list(methods) == ORDER  # 'full' first: the reference
    labels = [m.label for m in build_methods(
        ReportSettings(keep_layers=(1, 3, 5))).values()]
    assert [r['label'] for r in methods.values()] == labels
    expected = [*COLUMNS, *labels, 'command: ', 'device: ',
                f'torch {torch.__version__}', 'load average',
                'blocks [1, 3, 5], FIXED', 'Fisher pass (TR-PTS',
                'vs the TR-PTS sparse-value training step',
                'vs the TR-PTS masked training step',
                'Targets of the issue', 'GPS rule: K=1',
                'SPT-LoRA allocation', 'grad elements/step = numel']
    assert [text for text in expected if text not in stdout] == []
    targets = results['targets']
    assert len(targets) == 5
    for check in targets:
        verdict = 'met' if check['met'] else 'NOT met'
        assert check['met'] == (check['measured'] <= check['limit'])
        assert f'{check["target"]}: measured {check["measured"]:.3f}x' \
            f' (limit {check["limit"]:.2f}x) -> {verdict}' in stdout
    for row in methods.values():
        assert [k for k in ROW_KEYS if k not in row] == []


def test_trainable_and_communicated_counts(tiny_report):
    _, results = tiny_report
    methods = results['methods']
    model = _dense_model()
    total = sum(p.numel() for p in model.parameters())
    head = sum(p.numel() for p in model.head.parameters())
    biases = sum(p.numel() for n, p in model.backbone.named_parameters()
                 if n.endswith('bias'))
    full = methods['full']
    assert full['trainable_params'] == full['grad_elements'] == total
    assert methods['linear']['trainable_params'] == head == DIMS * CLASSES \
        + CLASSES
    # The frozen-weights bound: exactly the backbone biases + the head.
    assert methods['frozen']['trainable_params'] == biases + head
    assert methods['frozen']['grad_elements'] == biases + head
    # mmpretrain's LoRA: rank * (in + out) per qkv, plus the head.
    lora = RANK * (DIMS + 3 * DIMS) * DEPTH + head
    assert methods['lora']['trainable_params'] == lora
    assert methods['lora']['grad_elements'] == lora

    # TR-PTS: the sparse-value form communicates exactly what it trains;
    # the masked path communicates every dense gradient.
    selection = results['selection']
    trpts, masked = methods['trpts'], methods['trpts_masked']
    trainable = selection['trpts']['trainable']
    for row in (trpts, masked, methods['trpts_tokens']):
        assert row['trainable_params'] == trainable
    assert trpts['grad_elements'] == trainable
    assert methods['trpts_tokens']['grad_elements'] == trainable
    assert masked['grad_elements'] == total
    assert 20 * trpts['grad_elements'] < masked['grad_elements']
    form = trpts['training_form']
    assert form['gradient_elements'] == trpts['grad_elements']
    assert sum(form['paths'].values()) == 4 * DEPTH + 1  # + patch conv
    assert 0 < form['sparse_value_layers'] == sum(
        n for path, n in form['paths'].items()
        if path.startswith('sparse-value'))
    assert masked['training_form'] is None

    # GPS K=1: one entry per output neuron of every masked matrix.
    roles = assign_roles(model)
    rows = sum(p.shape[0] for n, p in model.named_parameters()
               if roles[n] == MASKED)
    assert selection['gps']['selected_entries'] == rows
    assert methods['gps']['trainable_params'] == \
        methods['gps']['grad_elements'] == selection['gps']['trainable']
    # SPT: its allocation + the head; partially trained matrices keep
    # dense gradients (the masked path).
    spt = methods['spt']
    assert spt['trainable_params'] == selection['spt']['total'] + head
    assert spt['grad_elements'] > spt['trainable_params']
    for name in ('rlrr', 'sparse_tuning'):
        assert methods[name]['trainable_params'] == \
            methods[name]['grad_elements'] < total / 10
    # AdamW: two state elements per updated entry, in every row.
    for name, row in methods.items():
        assert row['optimizer_state_elements'] == \
            2 * row['trainable_params'], name
        assert row['trainable_percent_of_backbone'] == \
            100 * row['trainable_params'] / full['backbone_params']


def test_ratios_networks_and_fisher(tiny_report):
    _, results = tiny_report
    methods = results['methods']
    full, bound = methods['full'], methods['frozen']
    for row in methods.values():
        assert set(row['ratios']) == set(row['bound_ratios']) == \
            set(RATIO_KEYS)
        for key in RATIO_KEYS:
            assert row['ratios'][key] == row[key] / full[key], key
            assert row['bound_ratios'][key] == row[key] / bound[key], key
    assert all(value == 1 for value in full['ratios'].values())
    assert all(value == 1 for value in bound['bound_ratios'].values())

    # One dense inference network for six rows; tokens cut the FLOPs.
    dense_flops = count_flops(_dense_model(), (3, 32, 32),
                              backbone_only=True)
    for name in ('full', 'linear', 'frozen', 'trpts_masked', 'trpts',
                 'gps'):
        assert methods[name]['inference_network'] == 'full'
        assert methods[name]['backbone_flops'] == dense_flops
        assert methods[name]['ratios']['images_per_second'] == 1
    for name in ('lora', 'trpts_tokens', 'spt', 'rlrr', 'sparse_tuning'):
        assert methods[name]['inference_network'] == name
    assert methods['trpts_tokens']['token_schedule'] == '65->46->33->24'
    assert methods['sparse_tuning']['token_schedule'] == '65->47->35->26'
    assert methods['trpts_tokens']['ratios']['gflops'] < 0.7
    assert methods['lora']['ratios']['gflops'] > 1

    # Shapes of the timing, memory and Fisher records (values free).
    for row in methods.values():
        assert len(row['step_seconds']) == 1
        assert len(row['forward_seconds']) == row['timed_runs'] == 2
        assert row['step_time_ms'] == 1e3 * row['step_seconds'][0]
        assert row['train_memory_bytes'] == \
            row['peak_bytes'] - row['baseline_bytes']
        assert row['memory_kind'].startswith('cpu')
    fisher = results['fisher']
    assert len(fisher['batch_seconds']) == 2 and fisher['timed_batches'] == 1
    assert fisher['seconds_per_sample'] == fisher['batch_seconds'][1] / 4
    assert fisher['memory_bytes'] == \
        fisher['peak_bytes'] - fisher['baseline_bytes']
    trpts = methods['trpts']
    assert fisher['ratios']['trpts']['time_per_sample'] == \
        fisher['seconds_per_sample'] / (trpts['step_time_ms'] / 1e3 / 4)
    assert set(fisher['ratios']) == {'trpts', 'trpts_masked'}


def test_training_memory_in_a_fresh_process(tmp_path):
    settings = ReportSettings(
        arch=vit_arch('b', 32, 2, 2), img_size=32, patch_size=8,
        num_classes=4, batch=2, steps=1, fisher_batches=1,
        keep_layers=(1, ), target_ratio=0.05)._asdict()
    path = str(tmp_path / 'trpts.pth')
    summary = report.select_parameters(settings, {'trpts': path})
    assert set(summary) == {'fisher', 'trpts'}
    result = report.in_fresh_process(
        'training_memory', str(tmp_path / 'out.json'), name='trpts',
        settings=settings, record_paths={'trpts': path})
    assert result['memory_kind'].startswith('cpu')
    assert result['train_memory_bytes'] == \
        result['peak_bytes'] - result['baseline_bytes']


def test_register_method_refuses_a_taken_name():
    with pytest.raises(KeyError, match='already registered'):
        register_method('full')(lambda settings: None)
    assert METHODS['full'](ReportSettings()._asdict()).label == \
        'full fine-tuning'
