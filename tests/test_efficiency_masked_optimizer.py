"""The masked-optimizer cost benchmark on a tiny ViT."""
import json
import os.path as osp

import torch
from conftest import PYTHON, REPO, assert_ok, run_tool

from mmtrpts.efficiency.common import TimedLoader, optimizer_state_bytes
from mmtrpts.efficiency.masked_optimizer import ROW_LABELS

BENCH = osp.join(REPO, 'tools', 'efficiency', 'masked_optimizer.py')
TINY = [
    '--embed-dims', '32', '--depth', '2', '--heads', '2', '--img-size', '32',
    '--patch', '4', '--batch', '4', '--steps', '2', '--target-ratio', '0.2',
    '--num-classes', '10', '--device', 'cpu'
]


def test_cli_tiny_vit_table_and_exact_state_bytes(tmp_path):
    out = str(tmp_path / 'results.json')
    proc = run_tool([PYTHON, BENCH, *TINY, '--out', out], timeout=120)
    assert_ok(proc)
    for label in ROW_LABELS:
        assert label in proc.stdout, label
    assert 'command: ' in proc.stdout and '--target-ratio 0.2' in proc.stdout
    assert f'torch {torch.__version__}' in proc.stdout
    assert 'device: ' in proc.stdout

    with open(out) as f:
        results = json.load(f)
    full, trpts = results['full'], results['trpts']
    # Same model in both fresh processes.
    assert full['total_params'] == trpts['total_params']
    # Dense AdamW: exp_avg + exp_avg_sq (fp32) per parameter, plus one
    # 4-byte step counter per tensor.
    assert full['trainable_params'] == full['total_params']
    assert full['optimizer_state_buffer_bytes'] == \
        2 * full['total_params'] * 4
    assert full['optimizer_state_bytes'] == \
        full['optimizer_state_buffer_bytes'] + \
        4 * full['optimizer_state_entries']
    # Masked AdamW: state only for the updated entries.
    trainable = trpts['trainable_params']
    assert trainable == trpts['selection_trainable']
    assert trpts['state_numel'] == 2 * trainable
    assert trpts['optimizer_state_buffer_bytes'] == 2 * trainable * 4
    assert trpts['optimizer_state_bytes'] == \
        trpts['optimizer_state_buffer_bytes'] + \
        4 * trpts['optimizer_state_entries']
    assert 0 < trainable < full['trainable_params']
    ratios = results['ratios']
    assert ratios['optimizer_state_bytes'] < 1
    assert abs(ratios['trainable_params'] -
               trainable / full['total_params']) < 1e-12
    # The calibrated budget lands within the hook's 5% tolerance.
    assert abs(trpts['realized_ratio'] - 0.2) <= 0.05 * 0.2
    assert trpts['fisher_batches'] == 2 and trpts['fisher_samples'] == 8
    for result in (full, trpts):
        assert len(result['step_seconds']) == 2
        assert len(result['update_seconds']) == 2
        assert 0 < result['update_seconds_per_step']
        assert result['step_seconds_per_sample'] > 0
        assert result['peak_bytes'] >= result['baseline_bytes'] > 0
    assert trpts['fisher_seconds_per_sample'] > 0


def test_optimizer_state_bytes_counts_moments_and_steps():
    params = [
        torch.nn.Parameter(torch.zeros(3, 5)),
        torch.nn.Parameter(torch.zeros(7))
    ]
    optimizer = torch.optim.AdamW(params)
    assert optimizer_state_bytes(optimizer)['bytes'] == 0
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()
    state = optimizer_state_bytes(optimizer)
    assert state['buffer_bytes'] == 2 * 22 * 4
    assert state['entries'] == 2
    assert state['bytes'] == state['buffer_bytes'] + state['scalar_bytes']


def test_timed_loader_times_each_batch():
    loader = TimedLoader([dict(i=0), dict(i=1), dict(i=2)])
    assert len(loader) == 3
    assert [b['i'] for b in loader] == [0, 1, 2]
    assert len(loader.seconds) == 3
    assert all(s >= 0 for s in loader.seconds)
