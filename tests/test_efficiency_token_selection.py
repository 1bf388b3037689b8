"""The token keep/fuse benchmark CLI on a tiny ViT (no timing asserted)."""
import json
import math
import os.path as osp
from fractions import Fraction

import torch
from conftest import PYTHON, REPO, assert_ok, run_tool

from mmtrpts.efficiency.token_selection import (COLUMNS, default_settings,
                                                timed_and_warmup_runs)

BENCH = osp.join(REPO, 'tools', 'efficiency', 'token_selection.py')
TINY = [
    '--embed-dims', '64', '--depth', '6', '--heads', '4', '--img-size', '32',
    '--patch', '4', '--batch', '4', '--runs', '4', '--keep-layers', '1,3,5',
    '--num-classes', '10', '--device', 'cpu'
]


def _rule_tokens(patches: int, rate: str, layers, rounding: str, fused: bool,
                 depth: int) -> int:
    """Token count after the last block, from the keep rule itself."""
    candidates = patches
    for i in range(depth):
        if i in layers:
            exact = Fraction(rate) * candidates
            keep = math.ceil(exact) if rounding == 'ceil' else \
                math.floor(exact)
            keep = max(1, min(candidates, keep))
            fuse = fused and keep < candidates
            candidates = keep + int(fuse)
    return 1 + candidates  # [CLS]


def test_rule_tokens_matches_vit_b_schedule():
    # Sparse-Tuning / EViT on ViT-B/16 at 224 px: 197 -> 140 -> 100 -> 72.
    assert _rule_tokens(196, '0.7', (3, 6, 9), 'ceil', True, 12) == 72
    assert _rule_tokens(196, '0.7', (3, 6), 'ceil', True, 12) == 100


def test_cli_tiny_vit_table_and_flops(tmp_path):
    out = str(tmp_path / 'results.json')
    proc = run_tool([PYTHON, BENCH, *TINY, '--out', out], timeout=120)
    assert_ok(proc)
    stdout = proc.stdout
    for column in COLUMNS:
        assert column in stdout, column
    for setting in default_settings((1, 3, 5)):
        assert setting.label in stdout, setting.label
    assert 'command: ' in stdout and '--keep-layers 1,3,5' in stdout
    assert f'torch {torch.__version__}' in stdout
    assert 'device: ' in stdout

    with open(out) as f:
        results = json.load(f)
    settings = results['settings']
    assert list(settings) == [s.name for s in default_settings((1, 3, 5))]
    dense, plain = settings['dense'], settings['no_selection']
    ceil = settings['rho0.7_ceil']
    # Without selection blocks the model is the dense ViT.
    assert plain['backbone_flops'] == dense['backbone_flops']
    assert plain['model_flops'] == dense['model_flops']
    assert plain['max_abs_diff_vs_dense'] == 0
    assert plain['tokens_final'] == dense['tokens_final'] == 65
    # rho = 0.7, ceil rounding, fused token, blocks 1, 3, 5 of 6.
    expected = _rule_tokens(64, '0.7', (1, 3, 5), 'ceil', True, 6)
    assert expected == 26  # 65 -> 47 -> 35 -> 26
    assert ceil['tokens_final'] == expected
    assert ceil['token_schedule'] == '65->47->35->26'
    assert ceil['flops_ratio'] < 1
    assert ceil['flops_ratio'] == \
        ceil['backbone_flops'] / dense['backbone_flops']
    assert settings['rho0.95_floor']['tokens_final'] == _rule_tokens(
        64, '0.95', (1, 3, 5), 'floor', True, 6)
    # Keep/fuse ops the FLOP counter cannot count are reported.
    assert 'aten::argsort' in ceil['unsupported_ops']
    assert 'aten::argsort' not in dense['unsupported_ops']
    # Shape of the timing record only (values are not asserted).
    timed, warmup = timed_and_warmup_runs(4, 0.25)
    assert (timed, warmup) == (3, 1)
    for res in settings.values():
        assert res['timed_runs'] == timed
        assert len(res['forward_seconds']) == timed
        assert res['images_per_second'] == 4 / sorted(
            res['forward_seconds'])[1]
        assert res['speedup_q1'] <= res['speedup'] <= res['speedup_q3']
    assert settings['dense']['speedup'] == 1
