"""The efficiency report CLI on a tiny ViT (no timing asserted)."""
import json
import os.path as osp

import pytest
import torch
from conftest import PYTHON, REPO, assert_ok, run_tool

from mmtrpts.complexity.flops import count_flops
from mmtrpts.efficiency.common import build_wrapper, random_batches, vit_arch
from mmtrpts.efficiency.methods import METHODS, register_method
from mmtrpts.efficiency.report import (COLUMNS, RATIO_KEYS, ReportSettings,
                                       build_methods)
from mmtrpts.efficiency.token_selection import build_classifier
from mmtrpts.engine import ParameterSelection

BENCH = osp.join(REPO, 'tools', 'efficiency', 'efficiency_report.py')
TINY = [
    '--embed-dims', '64', '--depth', '6', '--heads', '4', '--img-size', '32',
    '--patch', '4', '--batch', '4', '--steps', '1', '--runs', '4',
    '--keep-layers', '1,3,5', '--num-classes', '10', '--target-ratio', '0.05',
    '--device', 'cpu'
]


def test_cli_tiny_vit_params_flops_and_ratios(tmp_path):
    out = str(tmp_path / 'results.json')
    proc = run_tool([PYTHON, BENCH, *TINY, '--out', out], timeout=180)
    assert_ok(proc)
    settings = ReportSettings(keep_layers=(1, 3, 5))
    labels = [m.label for m in build_methods(settings).values()]
    expected = [
        *COLUMNS, *labels, '--keep-layers 1,3,5', 'device: ',
        f'torch {torch.__version__}', 'load average', 'blocks [1, 3, 5], FIXED'
    ]
    assert [text for text in expected if text not in proc.stdout] == []

    with open(out) as f:
        results = json.load(f)
    methods = results['methods']
    assert list(methods) == list(METHODS) == [
        'full', 'linear', 'trpts_params', 'trpts_tokens'
    ]
    assert [r['label'] for r in methods.values()] == labels
    full, linear = methods['full'], methods['linear']
    params, tokens = methods['trpts_params'], methods['trpts_tokens']

    # Trainable parameters, recounted on the same model.
    model = build_classifier(
        dict(type='VisionTransformer'), vit_arch('b', 64, 6, 4), 32, 4, 10,
        'cpu', 0)
    total = sum(p.numel() for p in model.parameters())
    head = sum(p.numel() for p in model.head.parameters())
    assert head == 64 * 10 + 10
    assert full['trainable_params'] == full['total_params'] == total
    assert linear['trainable_params'] == head
    # TR-PTS: the hook's pipeline on the same weights and Fisher batches.
    record = ParameterSelection(target_ratio=0.05, progress=False) \
        .run_on_loader(model, random_batches(2, 4, 32, 10, 1),
                       build_wrapper(model, 'trpts').roles)
    dense_parts = sum(p.numel() for n, p in model.named_parameters()
                      if n in set(record['full']))
    trainable = record['budget']['trainable']
    assert trainable == record['settings']['realised_entries'] + dense_parts
    assert params['trainable_params'] == tokens['trainable_params'] == \
        trainable == results['selection']['trainable']
    for row in methods.values():
        assert row['trainable_percent_of_backbone'] == \
            100 * row['trainable_params'] / row['backbone_params']

    # FLOPs: one dense network for three rows, fewer for the tokens row.
    dense_flops = count_flops(model, (3, 32, 32), backbone_only=True)
    for row in (full, linear, params):
        assert row['backbone_flops'] == dense_flops
        assert row['gflops'] == dense_flops / 1e9
        assert row['inference_network'] == 'full'
        assert row['tokens_final'] == 65
    assert tokens['inference_network'] == 'trpts_tokens'
    assert tokens['backbone_flops'] < dense_flops
    assert tokens['token_schedule'] == '65->62->59->57'

    # Ratios are value / full value of the JSON columns.
    for row in methods.values():
        assert set(row['ratios']) == set(RATIO_KEYS)
        for key in RATIO_KEYS:
            assert row['ratios'][key] == row[key] / full[key], key
    assert all(value == 1 for value in full['ratios'].values())
    for row in (linear, params):
        assert row['ratios']['gflops'] == 1
        assert row['ratios']['images_per_second'] == 1
    assert tokens['ratios']['gflops'] < 1
    assert params['ratios']['trainable_params'] == trainable / total

    # Shape of the timing and memory records only (values not asserted).
    for row in methods.values():
        assert len(row['step_seconds']) == 1
        assert len(row['forward_seconds']) == row['timed_runs'] == 3
        assert row['step_time_ms'] == 1e3 * row['step_seconds'][0]
        assert row['train_memory_bytes'] == \
            row['peak_bytes'] - row['baseline_bytes']
        assert row['memory_kind'].startswith('cpu')


def test_register_method_refuses_a_taken_name():
    with pytest.raises(KeyError, match='already registered'):
        register_method('full')(lambda settings: None)
    assert METHODS['full'](ReportSettings()._asdict()).label == \
        'full fine-tuning'
