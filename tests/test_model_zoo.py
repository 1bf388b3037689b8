"""The model zoo: metafile, model index and offline ``get_model``."""
import glob
import json
import os
import shutil
import os.path as osp

import numpy as np
import pytest
import torch
import yaml
from conftest import (PYTHON, REPO, assert_ok, run_tool,
                      write_backbone_checkpoint, write_tiny_config)
from mmengine.config import Config
from mmpretrain import ImageClassificationInferencer, get_model, list_models
from mmpretrain.registry import MODELS

from mmtrpts.apis import register_env_zoos, register_model_zoo
from mmtrpts.checkpoints import make_delta
from mmtrpts.checkpoints.zoo import (ZOO_ENV, ZooFileError, parse_zoo_file_name,
                                     resolve_zoo_file, zoo_file_name)
from mmtrpts.datasets.synthetic.tasks import TARGET_TASKS
from mmtrpts.results.runs import collect_runs
from mmtrpts.results.zoo import TABLE_BEGIN, TABLE_END, publish
from mmtrpts.utils.hashing import sha256_file
from mmtrpts.results.metafile import (keep_published, metafile_entry,
                                      model_name)
from mmtrpts.selection.record import selection_checksum

# get_model keyword overrides: DeiT-tiny's arch, 32 px patches, 64 px input.
TINY = dict(
    backbone=dict(arch='deit-tiny', patch_size=32, img_size=64, init_cfg=None),
    head=dict(in_channels=192))


#: Method folder -> its benchmark config count (the 19 VTAB-1k tasks and
#: the 5 FGVC data sets per model variant).
CONFIG_COUNTS = {
    'trpts': 3 * 24,  # ViT-B, Swin-B, ConvNeXt-B
    'gps': 24,
    'spt': 2 * 24,  # LoRA, Adapter
    'rlrr': 24,
    'sparse-tuning': 24,
}


def _metafile(method: str = 'trpts'):
    with open(osp.join(REPO, 'configs', method, 'metafile.yml')) as f:
        return yaml.safe_load(f)


@pytest.mark.parametrize('method', list(CONFIG_COUNTS))
def test_metafile_lists_every_config_once_and_is_indexed(method):
    models = _metafile(method)['Models']
    configs = sorted(glob.glob(osp.join(REPO, 'configs', method, '*.py')))
    assert len(configs) == CONFIG_COUNTS[method]
    assert sorted(m['Config'] for m in models) == sorted(
        osp.relpath(c, REPO) for c in configs)
    for entry in models:
        assert entry['Name'] == model_name(entry['Config'])
        assert entry['Name'].startswith(f'{method}_')
        # Nothing pretends to be a result.
        assert 'Results' not in entry and 'Weights' not in entry
    with open(osp.join(REPO, 'model-index.yml')) as f:
        assert yaml.safe_load(f) == {
            'Import': [f'configs/{m}/metafile.yml' for m in CONFIG_COUNTS]
        }
    assert sorted(list_models(f'{method}_*')) == sorted(
        m['Name'] for m in models)


def test_regenerating_a_metafile_keeps_what_was_published():
    fresh = [
        dict(Name='a', Metadata={'FLOPs': 2}),
        dict(Name='b', Metadata={'FLOPs': 3})
    ]
    published = dict(
        Name='a',
        Metadata={
            'FLOPs': 1,
            'Base checkpoint': 'ViT-B/16 IN-21k (original)',
            'Token selection blocks': [1, 2]
        },
        Results=[dict(Task='Image Classification')],
        Weights='mmtrpts-zoo://a_20261205-00000000.pth')
    a, b = keep_published(fresh, [published, dict(Name='c')])
    assert a == dict(
        Name='a',
        Metadata={
            'FLOPs': 2,  # regenerated
            'Base checkpoint': 'ViT-B/16 IN-21k (original)',
            'Token selection blocks': [1, 2]
        },
        Results=published['Results'],
        Weights=published['Weights'])
    assert b == dict(Name='b', Metadata={'FLOPs': 3})


@pytest.mark.parametrize('method,config,collection', [
    ('trpts', 'convnext-b_vtab1k-dtd.py', 'TR-PTS'),
    ('gps', 'vit-b_vtab1k-dtd.py', 'GPS'),
    ('spt', 'vit-b-lora_cub.py', 'SPT'),
    ('sparse-tuning', 'vit-b_cub.py', 'Sparse-Tuning'),
])
def test_metafile_entry_matches_the_config(method, config, collection):
    """The committed metafiles are what make_metafile.py writes today."""
    path = osp.join(REPO, 'configs', method, config)
    entry = next(m for m in _metafile(method)['Models']
                 if m['Name'] == model_name(path))
    assert entry['In Collection'] == collection
    fresh = metafile_entry(path, entry['Name'], collection,
                           entry['Metadata']['Training Data'], REPO)
    assert fresh == entry


def test_trpts_cub_metafile_numbers():
    entry = next(m for m in _metafile()['Models']
                 if m['Name'] == 'trpts_vit-b_cub')
    meta = entry['Metadata']
    # ViT-B/16 (85,798,656) + a 200-class head.
    assert meta['Parameters'] == 85798656 + 768 * 200 + 200
    low, high = meta['FLOPs range']
    assert low < high == meta['FLOPs'] < 17582 * 10**6  # < dense ViT-B/16
    assert meta['Trainable budget'] == 0.006
    assert meta['Training Data'] == 'CUB-200-2011'


def test_register_model_zoo_is_idempotent_and_names_a_missing_index(tmp_path):
    assert register_model_zoo() is True
    assert register_model_zoo() is True
    missing = str(tmp_path / 'model-index.yml')
    with pytest.raises(FileNotFoundError, match='model index not found'):
        register_model_zoo(missing)


def test_get_model_loads_a_local_delta_offline(tmp_path):
    torch.manual_seed(0)
    model = get_model('trpts_vit-b_cub', **TINY)
    model.init_weights()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    base = {k: v for k, v in start.items() if k.startswith('backbone.')}
    base_path = str(tmp_path / 'base.pth')
    torch.save(dict(meta=dict(), state_dict=base), base_path)

    trained = {k: v.clone() for k, v in start.items()}
    qkv = 'backbone.layers.0.attn.qkv.weight'
    indices = {qkv: torch.tensor([0, 5, 77], dtype=torch.int32)}
    trained[qkv].view(-1)[indices[qkv].long()] += 1.0
    full = sorted(n for n in trained if n.startswith('head.'))
    for name in full:
        trained[name] += 0.5
    trained['backbone.keep_layer_mask'][[2, 5, 8]] = True
    selection = dict(
        format='mmtrpts.selection',
        version=1,
        indices=indices,
        full=full,
        checksum=selection_checksum(indices),
        shapes={qkv: list(trained[qkv].shape)})
    delta_path = str(tmp_path / 'cub_delta.pth')
    torch.save(
        make_delta(
            trained,
            selection,
            base_state_dict=base,
            base_checkpoint=base_path), delta_path)

    loaded = get_model('trpts_vit-b_cub', pretrained=delta_path, **TINY)
    state = loaded.state_dict()
    assert sorted(state) == sorted(trained)
    for name, value in trained.items():
        assert torch.equal(state[name], value), name
    assert loaded.backbone.keep_layers == [2, 5, 8]
    assert loaded.head.fc.out_features == 200


PUBLISH = osp.join(REPO, 'tools', 'misc', 'publish_zoo.py')
SWEEP = osp.join(REPO, 'tools', 'sweep.py')


def _images(root: str, task: str, count: int) -> list:
    with open(osp.join(root, task, 'test.txt')) as f:
        names = [line.split()[0] for line in f if line.strip()][:count]
    return [osp.join(root, task, name) for name in names]


NAME = 'configs_vit-tiny_zoo_mini-vtab-location'


@pytest.fixture(scope='module')
def zoo_sweep(tmp_path_factory, mini_vtab) -> dict:
    """A finished tools/sweep.py run of TR-PTS (parameters and one token
    block) on a generated task, from a saved tiny 'pre-trained' ViT."""
    tmp_path = tmp_path_factory.mktemp('zoo_sweep')
    # A 'pre-trained' tiny ViT backbone checkpoint (random, seed 0).
    base = write_backbone_checkpoint(
        str(tmp_path / 'vit-tiny_base.pth'),
        arch=dict(
            embed_dims=32, num_layers=2, num_heads=2,
            feedforward_channels=64),
        img_size=32,
        patch_size=4,
        out_type='cls_token')
    configs = tmp_path / 'configs'
    configs.mkdir()
    write_tiny_config(
        str(configs / 'vit-tiny_zoo_mini-vtab.py'),
        mini_vtab,
        base='vit-tiny_trpts_mini-vtab.py',
        max_epochs=2,
        extra=f"""
model['backbone']['init_cfg'] = dict(
    type='Pretrained', checkpoint='{base}', prefix='backbone.')
custom_hooks = [dict(type='FisherSelectionHook', target_ratio=0.2,
                     batch_size=16, progress=False, save_plot=False,
                     token_placement=dict(mode='sparse', num_blocks=1))]
default_hooks = dict(logger=dict(interval=50))
""")
    work = str(tmp_path / 'work')
    assert_ok(run_tool([
        PYTHON, SWEEP, '--benchmark', 'mini-vtab', '--method', 'zoo',
        '--config-dir', str(configs), '--tasks', 'location', '--work-root',
        work
    ]))
    return dict(base=base, work=work, run_dir=osp.join(work, 'location'))


def test_zoo_pipeline_sweep_publish_get_model(zoo_sweep, tmp_path,
                                              mini_vtab, monkeypatch):
    """Sweep -> publish -> get_model(name, pretrained=True) -> equal outputs,
    and ImageClassificationInferencer on the zoo entry."""
    base, work, name = zoo_sweep['base'], zoo_sweep['work'], NAME
    zoo = str(tmp_path / 'zoo')
    proc = run_tool([
        PYTHON, PUBLISH, work, '--zoo', zoo, '--base', base, '--base-label',
        'tiny ViT (random, test)', '--date', '20261205'
    ])
    assert_ok(proc)
    assert 'published 1 run(s)' in proc.stdout

    # The metafile entry: labelled metrics of the run, hashed file name.
    run, = collect_runs(work)
    with open(osp.join(zoo, 'metafile.yml')) as f:
        entry, = yaml.safe_load(f)['Models']
    assert entry['Name'] == name
    metrics = entry['Results'][0]['Metrics']
    assert metrics == {
        'Top 1 Accuracy (last epoch)': round(run.last[1], 2),
        'Top 1 Accuracy (max test)': round(run.max_test[1], 2)
    }
    meta = entry['Metadata']
    assert meta['Base checkpoint'] == 'tiny ViT (random, test)'
    assert meta['Trainable parameters'] == run.trainable['params']
    weights = entry['Weights']
    assert weights.startswith('mmtrpts-zoo://' + name + '_20261205-')
    file = osp.join(zoo, weights[len('mmtrpts-zoo://'):])
    assert sha256_file(file).startswith(file[-12:-4])
    assert osp.isfile(osp.join(zoo, osp.basename(base)))  # beside the delta
    with open(osp.join(zoo, 'README.md')) as f:
        readme = f.read()
    assert (f'| `{name}` | location | tiny ViT (random, test) | '
            f'{run.last[1]:.2f} | {run.max_test[1]:.2f} |') in readme

    # The trained model, from the run's own checkpoint.
    run_dir = zoo_sweep['run_dir']
    cfg = Config.fromfile(osp.join(run_dir, 'vit-tiny_zoo_mini-vtab.py'))
    trained = MODELS.build(cfg.model).eval()
    with open(osp.join(run_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    state = torch.load(checkpoint, map_location='cpu', weights_only=False)
    trained.load_state_dict(state['state_dict'])
    blocks = trained.backbone.keep_layers
    assert len(blocks) == 1 and meta['Token selection blocks'] == blocks

    # get_model resolves the entry from the zoo folder, offline.
    monkeypatch.chdir(tmp_path)  # not the zoo: found through the index
    monkeypatch.setenv(ZOO_ENV, zoo)
    assert register_env_zoos() == [osp.join(zoo, 'model-index.yml')]
    model = get_model(name, pretrained=True)
    assert model.backbone.keep_layers == blocks
    assert model._dataset_meta == state['meta']['dataset_meta']
    assert len(model._dataset_meta['classes']) == \
        TARGET_TASKS['location'].num_classes
    inputs = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(
            model(inputs, mode='tensor'), trained(inputs, mode='tensor'))

    # The inferencer on the zoo entry = on the run's own checkpoint.
    images = _images(mini_vtab, 'location', 2)
    zoo_results = ImageClassificationInferencer(name, pretrained=True)(images)
    run_results = ImageClassificationInferencer(
        osp.join(run_dir, 'vit-tiny_zoo_mini-vtab.py'),
        pretrained=checkpoint)(images)
    for ours, theirs in zip(zoo_results, run_results):
        assert ours['pred_label'] == theirs['pred_label']
        np.testing.assert_array_equal(ours['pred_scores'],
                                      theirs['pred_scores'])

    # A file whose bytes differ from its name's hash is refused.
    with open(file, 'r+b') as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(ZooFileError, match='does not match the'):
        get_model(name, pretrained=True)
    os.remove(file)
    with pytest.raises(ZooFileError, match='not found in'):
        get_model(name, pretrained=True)


def test_publish_fills_the_entry_a_metafile_lists(zoo_sweep, tmp_path):
    """A name the model index lists is updated in place (the repository's
    benchmark metafiles); the README keeps its text around the table."""
    folder = tmp_path / 'configs' / 'method'
    folder.mkdir(parents=True)
    listed = dict(
        Name=NAME,
        Metadata={'FLOPs': 123, 'Training Data': 'generated location'},
        Config='configs/method/vit-tiny.py')
    with open(folder / 'metafile.yml', 'w') as f:
        f.write('# generated by make_metafile\n')
        yaml.safe_dump(dict(Collections=[dict(Name='M')], Models=[listed]), f)
    index = str(tmp_path / 'model-index.yml')
    with open(index, 'w') as f:
        yaml.safe_dump({'Import': ['configs/method/metafile.yml']}, f)
    with open(folder / 'README.md', 'w') as f:
        f.write(f'# M\n\nbefore\n\n{TABLE_BEGIN}\nold\n{TABLE_END}\n\nafter\n')
    zoo = str(tmp_path / 'zoo')
    entries, left_out = publish([zoo_sweep['run_dir']], zoo, zoo_sweep['base'],
                                'augreg', index, '20261205', log=lambda _: 0)
    assert left_out == [] and [e.name for e in entries] == [NAME]
    with open(folder / 'metafile.yml') as f:
        text = f.read()
    assert text.startswith('# generated by make_metafile\n')
    entry, = yaml.safe_load(text)['Models']
    assert entry['Metadata']['FLOPs'] == 123  # kept
    # The sweep's per-task --cfg-options (data roots aside) are recorded.
    overrides = entry['Metadata']['Training overrides']
    assert 'model.head.num_classes=8' in overrides
    assert 'train_dataloader.dataset.task=location' in overrides
    assert not any('data_root' in o for o in overrides)
    assert entry['Metadata']['Base checkpoint'] == \
        'ViT-B/16 IN-21k (AugReg)'
    assert entry['Results'][0]['Dataset'] == 'generated location'
    assert entry['Weights'] == 'mmtrpts-zoo://' + entries[0].file
    assert not osp.exists(osp.join(zoo, 'metafile.yml'))  # nothing local
    with open(folder / 'README.md') as f:
        readme = f.read()
    assert readme.startswith('# M\n\nbefore\n\n' + TABLE_BEGIN)
    assert readme.endswith(TABLE_END + '\n\nafter\n')
    assert 'old' not in readme and f'| `{NAME}` |' in readme


def test_publish_refuses_what_is_not_a_result(zoo_sweep, tmp_path):
    work = tmp_path / 'work'
    shutil.copytree(zoo_sweep['run_dir'], work / 'a')
    record = work / 'a' / 'sweep.json'
    with open(record) as f:
        sweep = json.load(f)
    with open(record, 'w') as f:
        json.dump(dict(sweep, returncode=1), f)
    index = str(tmp_path / 'none.yml')
    args = (str(tmp_path / 'zoo'), zoo_sweep['base'], 'original', index,
            '20261205')
    with pytest.raises(ValueError, match=r'(?s)not publishable.*work/a: failed.*exit code 1'):
        publish([str(work / 'a')], *args)
    assert publish([str(work / 'a')], *args, skip_incomplete=True,
                   log=lambda _: 0)[0] == []
    # Two runs of one name.
    shutil.copytree(zoo_sweep['run_dir'], work / 'b')
    shutil.copytree(zoo_sweep['run_dir'], work / 'c')
    with pytest.raises(ValueError, match='are both ' + NAME):
        publish([str(work / 'b'), str(work / 'c')], *args)
    # A base the run was not selected on.
    other = str(tmp_path / 'other_base.pth')
    state = torch.load(zoo_sweep['base'], weights_only=True)
    torch.save(dict(state_dict={k: v + 1 for k, v in
                                state['state_dict'].items()}), other)
    with pytest.raises(ValueError, match='was selected on'):
        publish([str(work / 'b')], str(tmp_path / 'zoo2'), other, 'original',
                index, '20261205', log=lambda _: 0)


def test_zoo_file_names_and_lookup(tmp_path):
    sha = 'ab' * 32
    name = zoo_file_name('trpts_vit-b_cub', sha, '20261205')
    assert name == 'trpts_vit-b_cub_20261205-abababab.pth'
    assert parse_zoo_file_name(name) == dict(
        name='trpts_vit-b_cub', date='20261205', sha='abababab')
    with pytest.raises(ValueError, match='YYYYMMDD'):
        zoo_file_name('m', sha, '2026-12-05')
    with pytest.raises(ValueError, match='64 lower-case hex'):
        zoo_file_name('m', 'xyz', '20261205')
    with pytest.raises(ZooFileError, match='not a zoo file name'):
        parse_zoo_file_name('model.pth')
    with pytest.raises(ZooFileError, match='without folders'):
        resolve_zoo_file('mmtrpts-zoo://sub/' + name)
    # Found in the first folder that has it, after its hash check.
    first, second = tmp_path / 'a', tmp_path / 'b'
    first.mkdir()
    second.mkdir()
    (second / 'x.bin').write_bytes(b'weights')
    real = zoo_file_name('m', sha256_file(str(second / 'x.bin')), '20261205')
    os.rename(second / 'x.bin', second / real)
    assert resolve_zoo_file('mmtrpts-zoo://' + real,
                            [str(first), str(second)]) == str(second / real)
    with pytest.raises(ZooFileError, match=r'not found in .*a, .*b'):
        resolve_zoo_file(name, [str(first), str(second)])
