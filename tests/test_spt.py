"""SPT: SPTViT, exact masked updates, merging, tools, a real run (the
benchmark configs: test_method_configs.py)."""
import os.path as osp
import re
import runpy
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import PYTHON, REPO, assert_ok, run_tool, write_tiny_config
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.runner import Runner
from mmpretrain.registry import MODELS
from test_spt_allocation import allocate_planted

from mmtrpts.apis import compute_sensitivity, set_task
from mmtrpts.checkpoints import merge_spt_lora
from mmtrpts.datasets.synthetic.mini_vtab import write_benchmark
from mmtrpts.models.peft import SPTLinear
from mmtrpts.selection.spt_allocation import (is_scored, spt_units,
                                              unit_threshold,
                                              validate_allocation)

TINY_ARCH = dict(
    embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64)
VIT = dict(arch=TINY_ARCH, img_size=32, patch_size=4)
MERGE_TOOL = osp.join(REPO, 'tools', 'model_converters', 'merge.py')
SCHEDULE = osp.join(REPO, 'configs', '_base_', 'schedules',
                    'spt_adamw_cosine.py')
EMBEDDED = 'vit-tiny_spt-lora_mini-vtab.py'


def _shapes(**vit):
    """Shapes of the tensors SPT scores (no memory: meta device)."""
    with torch.device('meta'):
        backbone = MODELS.build(dict(type='VisionTransformer', **vit))
    return {
        n: list(p.shape)
        for n, p in backbone.named_parameters() if is_scored(n)
    }


def _plan(shapes, structured_type, structured, unstructured, full):
    """Planted counts: thresholds for structured units / full vectors."""
    units = spt_units(shapes)
    plan = {}
    for name in structured + full:
        plan[name] = unit_threshold(units[name], structured_type, 8, 10, 5)[0]
    plan.update(unstructured)
    return plan


@pytest.fixture(scope='module', params=['lora', 'adapter'])
def tiny_file(request, tmp_path_factory):
    """A planted tiny allocation: LoRA/Adapter on layer 0's q and v slices,
    proj and layer 1's fc2; unstructured entries in the k slice, fc1 and
    two LayerNorms; full vectors incl. one qkv-bias slice."""
    structured_type = request.param
    plan = _plan(
        _shapes(**VIT),
        structured_type,
        structured=[
            'layers.0.attn.qkv.weight[q]', 'layers.0.attn.qkv.weight[v]',
            'layers.0.attn.proj.weight', 'layers.1.ffn.layers.1.weight'
        ],
        unstructured={
            'layers.0.attn.qkv.weight[k]': 10,
            'layers.0.ffn.layers.0.0.weight': 20,
            'layers.1.ln2.weight': 3,
            'ln1.weight': 2
        },
        full=['layers.1.attn.qkv.bias[k]', 'layers.1.ln1.bias'])
    allocation, _ = allocate_planted(
        _shapes(**VIT), plan, structured_type, cls_token=32)
    path = str(tmp_path_factory.mktemp('spt') / f'{structured_type}.pth')
    torch.save(allocation, path)
    return path, allocation


def _spt(path, structured_type, **kwargs):
    torch.manual_seed(0)
    return MODELS.build(
        dict(
            type='SPTViT',
            sensitivity_file=path,
            structured_type=structured_type,
            **VIT,
            **kwargs))


def _randomise_branches(model, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if '.spt_' in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
        for name, idx in model.masked_indices.items():
            param = dict(model.named_parameters())[name]
            param.view(-1)[idx] += torch.randn(idx.numel(), generator=gen)


def test_sptvit_structure_trainability_and_counts(tiny_file):
    path, allocation = tiny_file
    structured_type = allocation['settings']['structured_type']
    model = _spt(path, structured_type)
    qkv = model.layers[0].attn.qkv
    proj = model.layers[0].attn.proj
    assert isinstance(qkv, SPTLinear) and isinstance(proj, SPTLinear)
    assert qkv.row_ranges == {'q': (0, 32), 'v': (64, 96)}
    assert qkv.parallel == (structured_type == 'lora') and proj.parallel
    # The LoRA or Adapter on attn.proj reads its input without dropout
    # (docs/methods/spt.md §2.1).
    assert isinstance(proj.branches['all'].dropout, torch.nn.Identity)
    assert isinstance(qkv.branches['q'].dropout, torch.nn.Dropout)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    in_place = {
        'cls_token', 'layers.0.attn.qkv.weight',
        'layers.0.ffn.layers.0.0.weight', 'layers.1.ln2.weight', 'ln1.weight',
        'layers.1.attn.qkv.bias', 'layers.1.ln1.bias'
    }
    assert {n for n in trainable if '.spt_' not in n} == in_place
    assert set(
        model.masked_indices) == in_place - {'cls_token', 'layers.1.ln1.bias'}
    assert torch.equal(model.masked_indices['layers.1.attn.qkv.bias'],
                       torch.arange(32, 64))
    count = sum(p.numel() for n, p in model.named_parameters()
                if p.requires_grad and n not in model.masked_indices)
    count += sum(idx.numel() for idx in model.masked_indices.values())
    assert count == allocation['counts']['total'] == model.spt_counts['total']
    # Zero-initialised B / up-projections: the function is unchanged.
    model.init_weights()
    plain = MODELS.build(dict(type='VisionTransformer', **VIT))
    plain.load_state_dict({
        k: v
        for k, v in model.state_dict().items()
        if '.spt_' not in k and 'spt_checksum' not in k
    })
    model.eval()
    plain.eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x)[0], plain(x)[0])


def test_lora_merge_round_trip(tiny_file, tmp_path):
    path, allocation = tiny_file
    if allocation['settings']['structured_type'] == 'adapter':
        model = _spt(path, 'adapter')
        with pytest.raises(
                ValueError, match='SPT-Adapter weights cannot be '
                'merged'):
            merge_spt_lora(model.state_dict())
        return
    model = _spt(path, 'lora')
    _randomise_branches(model)
    model.eval()
    plain = MODELS.build(dict(type='VisionTransformer', **VIT))
    plain.load_state_dict(merge_spt_lora(model.state_dict()), strict=True)
    plain.eval()
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(plain(x)[0], model(x)[0], atol=1e-5, rtol=0)

    # The tool, on a classifier checkpoint: loads strictly without mmtrpts.
    head = dict(type='LinearClsHead', num_classes=3, in_channels=32)
    classifier = MODELS.build(
        dict(
            type='ImageClassifier',
            head=head,
            backbone=dict(type='SPTViT', sensitivity_file=path, **VIT)))
    _randomise_branches(classifier.backbone)
    checkpoint, merged = str(tmp_path / 'spt.pth'), str(tmp_path / 'm.pth')
    torch.save(dict(meta={}, state_dict=classifier.state_dict()), checkpoint)
    _run_merge_tool(checkpoint, merged)
    target = MODELS.build(
        dict(
            type='ImageClassifier',
            head=head,
            backbone=dict(type='VisionTransformer', **VIT)))
    target.load_state_dict(
        torch.load(merged, weights_only=True)['state_dict'], strict=True)
    classifier.eval()
    target.eval()
    torch.testing.assert_close(
        target(x, mode='tensor'),
        classifier(x, mode='tensor'),
        atol=1e-5,
        rtol=0)


def _run_merge_tool(*args):
    argv = sys.argv
    sys.argv = [MERGE_TOOL, 'spt', *args]
    try:
        runpy.run_path(MERGE_TOOL, run_name='__main__')
    finally:
        sys.argv = argv


def test_merge_tool_refuses_the_adapter_variant(tiny_file, tmp_path):
    path, allocation = tiny_file
    if allocation['settings']['structured_type'] == 'lora':
        with pytest.raises(ValueError, match='not an SPT state dict'):
            merge_spt_lora(
                MODELS.build(dict(type='VisionTransformer',
                                  **VIT)).state_dict())
        return
    checkpoint = str(tmp_path / 'adapter.pth')
    torch.save(
        dict(meta={}, state_dict=_spt(path, 'adapter').state_dict()),
        checkpoint)
    with pytest.raises(SystemExit, match='spt_adapter.*cannot be merged'):
        _run_merge_tool(checkpoint, str(tmp_path / 'out.pth'))


def test_unstructured_entries_update_exactly(tiny_file):
    path, allocation = tiny_file
    structured_type = allocation['settings']['structured_type']
    torch.manual_seed(0)
    model = MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=dict(
                type='SPTViT',
                sensitivity_file=path,
                structured_type=structured_type,
                **VIT),
            head=dict(type='LinearClsHead', num_classes=3, in_channels=32)))
    model.init_weights()
    schedule = Config.fromfile(SCHEDULE)
    # Strong decay: it must never reach a frozen entry.
    wrapper = build_optim_wrapper(
        model,
        dict(
            schedule.optim_wrapper,
            optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.5)))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(2)
    for _ in range(3):
        x = torch.randn(4, 3, 32, 32, generator=gen)
        loss = F.cross_entropy(
            model(x, mode='tensor'), torch.randint(0, 3, (4, ), generator=gen))
        wrapper.update_params(loss)
    masked = {
        f'backbone.{n}': i
        for n, i in model.backbone.masked_indices.items()
    }
    for name, param in model.named_parameters():
        after, start = param.detach().view(-1), before[name].view(-1)
        if name in masked:
            keep = torch.ones_like(after, dtype=torch.bool)
            keep[masked[name]] = False
            assert torch.equal(after[keep], start[keep]), name
            # (the key bias has no true gradient: softmax is shift-invariant)
            if name != 'backbone.layers.1.attn.qkv.bias':
                assert not torch.equal(after[~keep], start[~keep]), name
        elif not param.requires_grad:
            assert torch.equal(after, start), name
        else:
            assert not torch.equal(after, start), name
    # O(K) optimizer state: two AdamW moments per updated entry.
    assert wrapper.state_numel() == 2 * wrapper.num_updated()
    assert wrapper.num_updated() == allocation['counts']['total'] + 3 * 33
    decay = {
        id(p): g['weight_decay']
        for g in wrapper.param_groups
        for p in g['params']
    }
    names = {id(p): n for n, p in model.named_parameters()}
    leaves = {names[id(param)]: leaf for param, leaf, _ in wrapper._entries}
    assert decay[id(leaves['backbone.layers.0.attn.qkv.weight'])] == 0
    assert decay[id(model.backbone.cls_token)] == 0
    assert decay[id(model.head.fc.weight)] == 0.5
    branch = model.backbone.layers[0].attn.qkv.branches['q']
    assert decay[id(branch.down if structured_type ==
                    'lora' else branch.down.weight)] == 0.5


def test_mismatched_files_and_checkpoints_are_refused(tiny_file, tmp_path):
    path, allocation = tiny_file
    structured_type = allocation['settings']['structured_type']
    other = 'adapter' if structured_type == 'lora' else 'lora'
    with pytest.raises(
            ValueError,
            match=f'{re.escape(path)}: settings.'
            f"structured_type is '{structured_type}'"):
        _spt(path, other)
    with pytest.raises(ValueError, match='settings.rank is 8'):
        _spt(path, structured_type, rank=4)
    with pytest.raises(ValueError, match='made for other scored tensors'):
        MODELS.build(
            dict(
                type='SPTViT',
                sensitivity_file=path,
                structured_type=structured_type,
                img_size=32,
                patch_size=4,
                arch=dict(TINY_ARCH, num_layers=3)))
    with pytest.raises(FileNotFoundError, match='compute_sensitivity.py'):
        _spt(str(tmp_path / 'missing.pth'), structured_type)
    state = _spt(path, structured_type).state_dict()
    state['spt_checksum'] += 1
    with pytest.raises(ValueError, match='another SPT allocation'):
        _spt(path, structured_type).load_state_dict(state)


def test_vit_b_counts_equal_the_spec_formulas(tmp_path):
    """docs/methods/spt.md §1's cifar @ 0.4M allocation, planted on ViT-B/16:
    14 LoRA matrices (q, k, v, proj, fc1, fc2) = (0, 0, 4, 3, 4, 3) in blocks
    0-4, 69 full vectors (68 x 768 + 1 x 3072) and 23,789 unstructured entries
    -> structured incl. vectors 356,352, total 380,909."""
    vit_b = dict(arch='b', img_size=224, patch_size=16)
    shapes = _shapes(**vit_b)
    structured = ([f'layers.{i}.attn.qkv.weight[v]' for i in range(4)] +
                  [f'layers.{i}.attn.proj.weight' for i in range(3)] +
                  [f'layers.{i}.ffn.layers.0.0.weight' for i in range(4)] +
                  [f'layers.{i}.ffn.layers.1.weight' for i in range(3)])
    vectors = [
        n for n, u in spt_units(shapes).items()
        if u.kind == 'vector' and u.numel == 768
    ]
    unstructured = {f'layers.{i}.attn.qkv.weight[q]': 1228 for i in range(12)}
    unstructured.update(
        {f'layers.{i}.attn.qkv.weight[k]': 750
         for i in range(12)})
    unstructured['layers.10.ln2.weight'] = 53  # below 154: sparse LN
    plan = _plan(
        shapes,
        'lora',
        structured,
        unstructured,
        full=vectors[:68] + ['layers.0.ffn.layers.0.0.bias'])
    allocation, _ = allocate_planted(shapes, plan, 'lora', cls_token=768)
    counts = allocation['counts']
    assert len(allocation['structured']) == 14
    assert len(allocation['full_vectors']) == 69
    assert counts['structured'] == 7 * 12288 + 7 * 30720 == 301_056
    assert counts['structured'] + counts['vectors'] == 356_352
    assert counts['unstructured'] == 23_789
    assert counts['total'] == 380_909
    path = str(tmp_path / 'vit-b.pth')
    torch.save(allocation, path)
    with torch.device('meta'):  # counts only: no memory for the weights
        model = MODELS.build(
            dict(type='SPTViT', sensitivity_file=path, **vit_b))
    lora = sum(p.numel() for n, p in model.named_parameters()
               if '.spt_lora.' in n)
    full = sum(p.numel() for n, p in model.named_parameters()
               if p.requires_grad and '.spt_' not in n
               and n not in model.masked_indices)
    sparse = sum(i.numel() for i in model.masked_indices.values())
    assert lora == counts['structured']
    assert full == counts['vectors'] + 768
    assert sparse == counts['unstructured']
    assert lora + full + sparse == 380_909


def test_sensitivity_tool_then_ddp_train_and_resume(tmp_path, mini_vtab):
    """Stage 1 with the CLI; stage 2 on two gloo ranks (requires_grad fixed
    before DDP wraps the model, every trainable tensor used in every step:
    no reducer error), then a single-process resume re-arms the masked
    wrapper from the checkpoint."""
    out = str(tmp_path / 'sensitivity.pth')
    config = write_tiny_config(
        str(tmp_path / 'cfg.py'),
        mini_vtab,
        base=EMBEDDED,
        max_epochs=2,
        batch_size=4,
        extra=f"model['backbone']['sensitivity_file'] = '{out}'\n"
        'sensitivity_cfg = dict(tau_step=50, max_batches=2, batch_size=16)')
    proc = run_tool([
        PYTHON,
        osp.join(REPO, 'tools', 'compute_sensitivity.py'), config, '--budget',
        '0.004', '--mode', 'train'
    ])
    assert_ok(proc)
    assert re.search(
        r'32 samples in 2 batches \(train mode\); SPT lora '
        r'allocation: total [\d,]+ \(target 4,000', proc.stdout)
    allocation = torch.load(out, weights_only=True)
    validate_allocation(allocation, source=out)
    assert allocation['structured'] and allocation['unstructured']

    work = str(tmp_path / 'work')
    proc = run_tool([
        'bash',
        osp.join(REPO, 'tools', 'dist_train.sh'), config, '2', '--work-dir',
        work
    ],
                    env_extra=dict(PORT='29547', PYTHON=PYTHON))
    assert_ok(proc)
    assert 'Epoch(train) [2][8/8]' in proc.stdout + proc.stderr
    resumed = run_tool([
        PYTHON,
        osp.join(REPO, 'tools', 'train.py'), config, '--work-dir', work,
        '--resume', '--cfg-options', 'train_cfg.max_epochs=3'
    ])
    assert_ok(resumed)
    log = resumed.stdout + resumed.stderr
    assert 'resumed epoch: 2' in log
    assert re.search(r'SPT \(lora, .*sensitivity.pth\): backbone structured',
                     log)
    first, second = (
        torch.load(osp.join(work, f'epoch_{e}.pth'), weights_only=False)
        for e in (2, 3))
    selection = second['optimizer']['masked_selection']
    assert selection['checksum'] == \
        first['optimizer']['masked_selection']['checksum']
    for name, value in first['state_dict'].items():
        idx = selection['indices'].get(name)
        if idx is not None:
            keep = torch.ones(value.numel(), dtype=torch.bool)
            keep[idx.long()] = False
            assert torch.equal(second['state_dict'][name].view(-1)[keep],
                               value.view(-1)[keep]), name
        elif name not in selection['full']:
            assert torch.equal(second['state_dict'][name], value), name


def test_embedded_config_learns_a_task(tmp_path):
    """The demo's call sequence on a generated mini-VTAB task: set the task,
    compute the sensitivity file, train, test.  `texture` with 400 training
    images (the `mini_vtab` fixture's 64 are too few for any method:
    full fine-tuning reaches 22-31%), random-init tiny ViT, 6 epochs:
    well above chance (1/6)."""
    data_root = str(tmp_path / 'data')
    write_benchmark(
        data_root,
        tasks=('texture', ),
        sizes=dict(train800=320, val200=80, test=160))
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'embedded', EMBEDDED))
    set_task(cfg, 'texture', 6, data_root=data_root)
    cfg.model.backbone.update(arch=TINY_ARCH, init_cfg=None)
    cfg.model.head.in_channels = 32
    cfg.train_cfg.max_epochs = 6
    cfg.train_dataloader.batch_size = 16
    cfg.optim_wrapper.optimizer.lr = 1e-2  # random init: a higher lr
    cfg.work_dir = str(tmp_path)
    cfg.log_level = 'WARNING'
    compute_sensitivity(
        cfg,
        out=str(tmp_path / 'texture.pth'),
        progress=False,
        budget=0.004,
        tau_step=50,
        max_batches=4)
    assert cfg.model.backbone.sensitivity_file == str(tmp_path / 'texture.pth')
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.test()['accuracy/top1'] > 40  # 60.0 measured
