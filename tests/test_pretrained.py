"""Named pretrained weights: torchvision:// / enum names and timm ``pretrained=True``, resolved
through the torch hub and Hugging Face hub caches. No test touches the network: caches are
temporary folders, downloads are replaced or the hub is put in offline mode."""
import dataclasses
import logging
import os
import socket
import sys
import urllib.error
from pathlib import Path

import huggingface_hub
import pytest
import timm
import torch
import torchvision
import mmengine.dist
from mmengine.config import Config

from metapoint.apis import init_estimator
from metapoint.models.backbones import (PretrainedWeightsUnavailable, TimmBackbone,
                                        TorchvisionResNet, describe_resnet_weights,
                                        describe_timm_weights, disable_backbone_pretrained,
                                        fetch_weights)
from metapoint.models.backbones import resnet as resnet_module
from metapoint.registry import MODELS
from metapoint.utils import register_all_modules
from tests.helpers import REPO

R18_V1_URL = 'https://download.pytorch.org/models/resnet18-f37072fd.pth'
R50_V1_URL = 'https://download.pytorch.org/models/resnet50-0676ba61.pth'
R50_V2_URL = 'https://download.pytorch.org/models/resnet50-11ad3fa6.pth'
TIMM_R18_REPO = 'timm/resnet18.a1_in1k'
METAPOINT_S1 = 'configs/metapoint/metapoint_r50_4xb16_mp100-split1_1shot.py'
OFFLINE_HINT = '--cfg-options model.backbone.pretrained=/path/to/'


def _random_state(net, seed):
    """Give ``net`` random weights and BN statistics (so a load is visible), return its state."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for value in net.state_dict().values():
            if value.is_floating_point():
                value.copy_(torch.rand(value.shape, generator=g) + 0.5)
    return {k: v.clone() for k, v in net.state_dict().items()}


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty TORCH_HOME; downloads fail the test unless a test replaces them again."""
    home = tmp_path / 'torch_home'
    monkeypatch.setenv('TORCH_HOME', str(home))

    def no_download(url, *args, **kwargs):
        pytest.fail(f'unexpected download of {url}')

    monkeypatch.setattr(torch.hub, 'download_url_to_file', no_download)
    return home


@pytest.fixture(scope='module')
def tv_r18_state():
    """A torchvision resnet18 state dict (fc included, like the ImageNet files)."""
    return _random_state(torchvision.models.resnet18(weights=None), seed=1)


def _put_in_torch_cache(home: Path, url: str, state) -> Path:
    path = home / 'hub' / 'checkpoints' / os.path.basename(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def _assert_backbone_equals(model, state):
    own = model.state_dict()
    assert set(own) == {k for k in state if not k.startswith('fc.')}
    for key, value in own.items():
        assert torch.equal(value, state[key]), key


# ------------------------------------------------------------------------------------------
# torchvision names
# ------------------------------------------------------------------------------------------


def test_torchvision_names_resolve_without_io(torch_home):
    src = describe_resnet_weights('torchvision://resnet50', 50)
    assert (src.kind, src.name, src.url) == ('torchvision', 'ResNet50_Weights.IMAGENET1K_V1',
                                             R50_V1_URL)
    assert src.hash_prefix == '0676ba61'
    assert src.cache_path == str(torch_home / 'hub' / 'checkpoints' / 'resnet50-0676ba61.pth')
    assert not torch_home.exists()  # describing reads and creates nothing
    for spec in ('IMAGENET1K_V1', 'ResNet50_Weights.IMAGENET1K_V1'):
        assert describe_resnet_weights(spec, 50) == src
    v2 = describe_resnet_weights('IMAGENET1K_V2', 50)
    assert (v2.name, v2.url) == ('ResNet50_Weights.IMAGENET1K_V2', R50_V2_URL)
    assert describe_resnet_weights('DEFAULT', 50).url == R50_V2_URL  # torchvision's alias
    assert describe_resnet_weights('torchvision://resnet18', 18).url == R18_V1_URL
    assert describe_resnet_weights(None, 50).kind == 'random'
    local = describe_resnet_weights('weights/r50.pth', 50)
    assert (local.kind, local.name, local.url) == ('file', 'weights/r50.pth', None)


@pytest.mark.parametrize('spec,depth,message', [
    ('torchvision://resnet50', 18, r"holds resnet50 weights.*depth=18"),
    ('ResNet50_Weights.IMAGENET1K_V1', 18, r'names ResNet50_Weights.*takes ResNet18_Weights'),
    ('IMAGENET1K_V2', 18, r"not a member of ResNet18_Weights \(members: 'IMAGENET1K_V1', "),
    ('torchvision://vgg16', 50, r"torchvision:// prefix takes one of \['resnet18'"),
    ('https://download.pytorch.org/models/resnet50-0676ba61.pth', 50, 'only the torchvision://'),
    (True, 50, 'pretrained=True is not supported'),
])
def test_bad_torchvision_names_raise(spec, depth, message):
    with pytest.raises(ValueError, match=message):
        describe_resnet_weights(spec, depth)
    with pytest.raises(ValueError, match=message):
        TorchvisionResNet(depth=depth, pretrained=spec)


@pytest.mark.parametrize('spec', ['torchvision://resnet18', 'IMAGENET1K_V1'])
def test_cached_torchvision_file_loads_without_network(torch_home, tv_r18_state, mm_logs, spec):
    path = _put_in_torch_cache(torch_home, R18_V1_URL, tv_r18_state)
    mm_logs.clear()
    model = TorchvisionResNet(depth=18, pretrained=spec)  # torch_home fails any download
    _assert_backbone_equals(model, tv_r18_state)
    messages = [r.getMessage() for r in mm_logs]
    assert any('ResNet18_Weights.IMAGENET1K_V1' in m and str(path) in m and 'loaded' in m
               for m in messages)
    assert not [r for r in mm_logs if r.levelno >= logging.WARNING]


def test_load_pretrained_reuses_the_source_described_in_init(torch_home, tv_r18_state,
                                                          monkeypatch):
    _put_in_torch_cache(torch_home, R18_V1_URL, tv_r18_state)
    calls = []

    def counting(*args, **kwargs):
        calls.append(args[0])
        return describe_resnet_weights(*args, **kwargs)

    monkeypatch.setattr(resnet_module, 'describe_resnet_weights', counting)
    model = TorchvisionResNet(depth=18, pretrained='torchvision://resnet18')
    assert calls == ['torchvision://resnet18']  # __init__ only, load_pretrained reuses it
    model.load_pretrained('IMAGENET1K_V1')  # another value is still described
    assert calls == ['torchvision://resnet18', 'IMAGENET1K_V1']
    _assert_backbone_equals(model, tv_r18_state)


def test_missing_file_is_downloaded_into_the_cache_with_hash_check(torch_home, tv_r18_state,
                                                                    monkeypatch):
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, dst, hash_prefix))
        torch.save(tv_r18_state, dst)

    monkeypatch.setattr(torch.hub, 'download_url_to_file', fake_download)
    model = TorchvisionResNet(depth=18, pretrained='torchvision://resnet18')
    cache_file = torch_home / 'hub' / 'checkpoints' / 'resnet18-f37072fd.pth'
    assert calls == [(R18_V1_URL, str(cache_file), 'f37072fd')]
    _assert_backbone_equals(model, tv_r18_state)
    TorchvisionResNet(depth=18, pretrained='torchvision://resnet18')  # now cached: no 2nd call
    assert len(calls) == 1


def test_download_failure_names_url_cache_path_and_override(torch_home, monkeypatch):
    def offline(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError('[Errno -3] Temporary failure in name resolution')

    monkeypatch.setattr(torch.hub, 'download_url_to_file', offline)
    with pytest.raises(PretrainedWeightsUnavailable) as err:
        TorchvisionResNet(depth=18, pretrained='torchvision://resnet18')
    msg = str(err.value)
    cache_file = torch_home / 'hub' / 'checkpoints' / 'resnet18-f37072fd.pth'
    for part in ("pretrained='torchvision://resnet18'", 'ResNet18_Weights.IMAGENET1K_V1',
                 R18_V1_URL, str(cache_file), 'URLError', 'name resolution', 'TORCH_HOME',
                 OFFLINE_HINT + 'resnet18-f37072fd.pth'):
        assert part in msg, part
    assert isinstance(err.value.__cause__, urllib.error.URLError)
    assert not cache_file.exists()


def test_damaged_cached_file_says_delete_it(torch_home):
    path = torch_home / 'hub' / 'checkpoints' / 'resnet18-f37072fd.pth'
    path.parent.mkdir(parents=True)
    path.write_bytes(b'not a checkpoint')
    with pytest.raises(RuntimeError, match=r'(?s)could not read.*looks damaged: delete'):
        TorchvisionResNet(depth=18, pretrained='torchvision://resnet18')


def test_pretrained_weights_survive_init_weights(torch_home, tv_r18_state):
    """The runner calls model.init_weights() before training: the backbone keeps the file."""
    _put_in_torch_cache(torch_home, R18_V1_URL, tv_r18_state)
    register_all_modules()
    cfg = Config.fromfile(str(REPO / METAPOINT_S1))
    cfg.model.backbone.depth = 18
    cfg.model.backbone.pretrained = 'torchvision://resnet18'
    model = MODELS.build(cfg.model)
    model.init_weights()
    _assert_backbone_equals(model.backbone, tv_r18_state)


# ------------------------------------------------------------------------------------------
# timm pretrained=True through the Hugging Face hub cache
# ------------------------------------------------------------------------------------------


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face hub cache, with the hub in offline mode (no request is made)."""
    cache = tmp_path / 'hf_hub'
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(cache))
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)
    return cache


def test_timm_true_loads_the_hub_cached_file(hf_cache, mm_logs):
    from safetensors.torch import save_file
    full = timm.create_model('resnet18', pretrained=False)
    state = _random_state(full, seed=2)
    revision = 'a' * 40
    repo_dir = hf_cache / 'models--timm--resnet18.a1_in1k'
    snapshot = repo_dir / 'snapshots' / revision
    snapshot.mkdir(parents=True)
    (repo_dir / 'refs').mkdir()
    (repo_dir / 'refs' / 'main').write_text(revision)
    save_file(state, str(snapshot / 'model.safetensors'))

    src = describe_timm_weights(True, 'resnet18')
    assert (src.kind, src.name, src.cache_path) == ('timm-hub', TIMM_R18_REPO, str(repo_dir))
    mm_logs.clear()
    model = TimmBackbone('resnet18', out_indices=(1, 2, 3), pretrained=True).eval()
    assert any(TIMM_R18_REPO in r.getMessage() and 'model.safetensors' in r.getMessage()
               for r in mm_logs)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = full.eval().forward_intermediates(x, indices=[1, 2, 3], intermediates_only=True)
        for a, b in zip(model(x), ref):
            assert torch.equal(a, b)


def test_timm_true_offline_without_cache_gives_clear_error(hf_cache):
    with pytest.raises(PretrainedWeightsUnavailable) as err:
        TimmBackbone('resnet18', pretrained=True)
    msg = str(err.value)
    for part in (TIMM_R18_REPO, 'https://huggingface.co/timm/resnet18.a1_in1k/resolve/main/'
                 'model.safetensors', str(hf_cache / 'models--timm--resnet18.a1_in1k'),
                 'HF_HUB_CACHE', OFFLINE_HINT + 'model.safetensors'):
        assert part in msg, part


def test_timm_names(torch_home, monkeypatch):
    with pytest.raises(ValueError, match=r'Invalid pretrained tag \(nope\)'):
        describe_timm_weights(True, 'resnet18.nope')
    assert describe_timm_weights(False, 'resnet18').kind == 'random'
    assert describe_timm_weights('w.pth', 'resnet18').kind == 'file'
    for url in ('torchvision://resnet50', 'https://example.com/r50.pth'):
        with pytest.raises(ValueError) as err:
            describe_timm_weights(url, 'resnet50')
        msg = str(err.value)
        for part in (f"TimmBackbone('resnet50'): pretrained={url!r}", 'reads no URL',
                     'True (timm', "'resnet50.tv_in1k'", 'False / None', 'local checkpoint path'):
            assert part in msg, part
        assert 'only the torchvision' not in msg
    # a model whose pretrained config has only a URL goes through the torch hub cache
    real = timm.models.get_pretrained_cfg('resnet18')
    monkeypatch.setattr(timm.models, 'get_pretrained_cfg',
                        lambda name: dataclasses.replace(real, hf_hub_id=None))
    src = describe_timm_weights(True, 'resnet18')
    assert (src.kind, src.url, src.hash_prefix) == ('timm-url', real.url, None)
    assert src.cache_path == str(torch_home / 'hub' / 'checkpoints' / os.path.basename(real.url))


def _put_in_hub_cache(cache: Path, repo: str, filename: str, state) -> Path:
    """Lay out a hub cache entry of ``repo`` (refs/main -> one snapshot) holding ``filename``."""
    revision = 'b' * 40
    repo_dir = cache / ('models--' + repo.replace('/', '--'))
    (repo_dir / 'snapshots' / revision).mkdir(parents=True, exist_ok=True)
    (repo_dir / 'refs').mkdir(exist_ok=True)
    (repo_dir / 'refs' / 'main').write_text(revision)
    path = repo_dir / 'snapshots' / revision / filename
    torch.save(state, path)
    return path


class _RepoLacksFile(huggingface_hub.errors.RemoteEntryNotFoundError):
    """What hf_hub_download raises for a file the repo does not hold (no HTTP response needed)."""

    def __init__(self, message):
        Exception.__init__(self, message)


@pytest.mark.parametrize('old_hub', [False, True], ids=['hub', 'hub-without-errors-module'])
def test_hub_download_tries_the_next_file_when_the_repo_lacks_one(hf_cache, monkeypatch,
                                                                  old_hub):
    if old_hub:  # older huggingface_hub: no `errors` module, the classes live in `utils`
        errors = huggingface_hub.errors
        for name in ('EntryNotFoundError', 'LocalEntryNotFoundError'):
            monkeypatch.setattr(huggingface_hub.utils, name, getattr(errors, name),
                                raising=False)
        monkeypatch.setitem(sys.modules, 'huggingface_hub.errors', None)
    calls = []

    def fake_download(repo, name, revision=None, cache_dir=None):
        calls.append(name)
        if name == 'model.safetensors':
            raise _RepoLacksFile(f'404 Entry Not Found: {repo}/{name}')
        return str(_put_in_hub_cache(Path(cache_dir), repo, name, {'w': torch.ones(1)}))

    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', fake_download)
    path = fetch_weights(describe_timm_weights(True, 'resnet18'), True)
    assert calls == ['model.safetensors', 'pytorch_model.bin']
    assert path.endswith('pytorch_model.bin') and path.startswith(str(hf_cache))


def test_hub_not_cached_offline_is_unavailable_not_a_missing_file(hf_cache, monkeypatch):
    from huggingface_hub.utils import LocalEntryNotFoundError  # an EntryNotFoundError too
    calls = []

    def offline(repo, name, revision=None, cache_dir=None):
        calls.append(name)
        raise LocalEntryNotFoundError('not in the disk cache and outgoing traffic is disabled')

    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', offline)
    with pytest.raises(PretrainedWeightsUnavailable, match='LocalEntryNotFoundError'):
        fetch_weights(describe_timm_weights(True, 'resnet18'), True)
    assert calls == ['model.safetensors']  # the next file name is not tried


# ------------------------------------------------------------------------------------------
# distributed runs: one barrier for every rank, errors raised instead of hanging
# ------------------------------------------------------------------------------------------


@pytest.fixture
def fake_ranks(monkeypatch):
    """Run fetch_weights as rank ``rank`` of a 4-rank job on 2 nodes (hosts a, a, b, b).

    No local process group exists (mmengine's init_dist creates none), so the node-local rank
    comes from the host-name all-gather. ``events`` records downloads and barriers in order;
    ``on_barrier`` runs at the barrier, standing for what the other ranks did meanwhile.
    ``LOCAL_RANK=0`` on every rank, as tools/train.py leaves it under ``--launcher mpi``.
    """
    state = dict(rank=0, events=[], on_barrier=None)
    hosts = ['node-a', 'node-a', 'node-b', 'node-b']

    def no_local_group():
        raise RuntimeError('Local process group is not created')

    def all_gather_object(out, obj):
        assert obj == socket.gethostname()
        out[:] = hosts

    def barrier(group=None):
        state['events'].append('barrier')
        if state['on_barrier'] is not None:
            state['on_barrier']()

    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.setattr(mmengine.dist, 'get_dist_info', lambda group=None: (state['rank'], 4))
    monkeypatch.setattr(mmengine.dist, 'get_local_rank', no_local_group)
    monkeypatch.setattr(mmengine.dist, 'barrier', barrier)
    monkeypatch.setattr(torch.distributed, 'all_gather_object', all_gather_object)
    monkeypatch.setattr(socket, 'gethostname', lambda: hosts[state['rank']])
    return state


@pytest.mark.parametrize('rank', [0, 1, 2, 3])
@pytest.mark.parametrize('cached', [True, False], ids=['cached', 'not-cached'])
def test_every_rank_reaches_the_barrier_once_and_only_local_rank0_downloads(
        torch_home, tv_r18_state, monkeypatch, fake_ranks, rank, cached):
    source = describe_resnet_weights('torchvision://resnet18', 18)
    cache_file = torch_home / 'hub' / 'checkpoints' / 'resnet18-f37072fd.pth'

    def download(url, dst, hash_prefix=None, progress=True):
        fake_ranks['events'].append('download')
        torch.save(tv_r18_state, dst)

    monkeypatch.setattr(torch.hub, 'download_url_to_file', download)
    if cached:
        _put_in_torch_cache(torch_home, R18_V1_URL, tv_r18_state)
    else:  # the node's local rank 0 (another process) downloads while this rank waits
        def other_rank_downloaded():
            if not cache_file.exists():
                _put_in_torch_cache(torch_home, R18_V1_URL, tv_r18_state)

        fake_ranks['on_barrier'] = other_rank_downloaded
    fake_ranks['rank'] = rank
    assert fetch_weights(source, 'torchvision://resnet18') == str(cache_file)
    downloads = rank in (0, 2) and not cached  # first rank of node-a / node-b, LOCAL_RANK aside
    assert fake_ranks['events'] == (['download'] if downloads else []) + ['barrier']


def test_local_process_group_wins_over_host_names(torch_home, tv_r18_state, monkeypatch,
                                                  fake_ranks):
    _put_in_torch_cache(torch_home, R18_V1_URL, tv_r18_state)
    monkeypatch.setattr(mmengine.dist, 'get_local_rank', lambda: 1)

    def no_gather(out, obj):
        pytest.fail('the host names are not needed with a local process group')

    monkeypatch.setattr(torch.distributed, 'all_gather_object', no_gather)
    fake_ranks['rank'] = 0
    fetch_weights(describe_resnet_weights('IMAGENET1K_V1', 18))
    assert fake_ranks['events'] == ['barrier']


@pytest.mark.parametrize('failure', ['download', 'makedirs'])
def test_a_failure_on_the_downloading_rank_is_raised_after_the_barrier(
        torch_home, tmp_path, monkeypatch, fake_ranks, failure):
    if failure == 'download':
        def offline(url, dst, hash_prefix=None, progress=True):
            raise urllib.error.URLError('[Errno -3] Temporary failure in name resolution')

        monkeypatch.setattr(torch.hub, 'download_url_to_file', offline)
        expected = PretrainedWeightsUnavailable
    else:  # TORCH_HOME below a file: os.makedirs fails before any download
        (tmp_path / 'a_file').write_text('')
        monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'a_file' / 'torch'))
        expected = NotADirectoryError
    source = describe_resnet_weights('torchvision://resnet18', 18)
    with pytest.raises(expected):
        fetch_weights(source, 'torchvision://resnet18')
    assert fake_ranks['events'] == ['barrier']


def test_the_other_ranks_raise_when_the_download_failed(torch_home, fake_ranks):
    fake_ranks['rank'] = 3  # local rank 1 of node-b; its local rank 0 got no file
    source = describe_resnet_weights('torchvision://resnet18', 18)
    with pytest.raises(PretrainedWeightsUnavailable) as err:
        fetch_weights(source, 'torchvision://resnet18')
    msg = str(err.value)
    for part in ("pretrained='torchvision://resnet18'", R18_V1_URL, source.cache_path,
                 'local rank 0 of this node', '--cfg-options model.backbone.pretrained='):
        assert part in msg, part
    assert fake_ranks['events'] == ['barrier']


def test_single_process_uses_no_barrier(torch_home, tv_r18_state, monkeypatch):
    _put_in_torch_cache(torch_home, R18_V1_URL, tv_r18_state)
    monkeypatch.setattr(mmengine.dist, 'barrier', lambda group=None: pytest.fail('barrier'))
    source = describe_resnet_weights('torchvision://resnet18', 18)
    assert fetch_weights(source) == source.cache_path


# ------------------------------------------------------------------------------------------
# configs, test / inference entry points
# ------------------------------------------------------------------------------------------

CONFIGS = sorted(p for p in (REPO / 'configs').rglob('*.py') if '_base_' not in p.parts)


def test_real_data_configs_train_from_torchvision_v1_and_cpu_configs_from_scratch():
    real, scratch = [], []
    for path in CONFIGS:
        backbone = Config.fromfile(str(path)).model.get('backbone')
        if backbone is None:
            assert path.parent.name == 'support_copy', path  # the only backbone-free models
            continue
        if path.parent.name == 'backbones':  # the timm backbone configs: timm's own weights
            assert backbone.type == 'TimmBackbone' and backbone.pretrained is True, path
            continue
        if '_mp100-' in path.name:
            real.append(path.name)
            assert backbone.depth == 50 and backbone.pretrained == 'torchvision://resnet50', path
            src = describe_resnet_weights(backbone.pretrained, backbone.depth)
            assert (src.name, src.url) == ('ResNet50_Weights.IMAGENET1K_V1', R50_V1_URL), path
        else:
            scratch.append(path.name)
            assert 'pretrained' in backbone and backbone.pretrained is None, path
    expected = [p.name for p in CONFIGS if p.match('*_r50_*_mp100-*.py')]
    assert sorted(real) == sorted(expected) and len(real) >= 2 * 10 + 2 * 15
    assert scratch and all('synthetic' in name for name in scratch)


def test_checkpoint_entry_points_skip_imagenet_weights(torch_home, tv_r18_state, tmp_path):
    register_all_modules()
    cfg = Config.fromfile(str(REPO / 'configs/fmmp/fmmp_r50_1xb16_mp100-split1_1shot.py'))
    assert disable_backbone_pretrained(cfg.model) and cfg.model.backbone.pretrained is None
    assert not disable_backbone_pretrained(cfg.model)  # nothing left to disable
    assert not disable_backbone_pretrained(dict(type='SupportCopy'))

    cfg = Config.fromfile(str(REPO / METAPOINT_S1))
    cfg.model.backbone.depth = 18
    cfg.model.backbone.pretrained = 'torchvision://resnet18'
    cached = _put_in_torch_cache(torch_home, R18_V1_URL, tv_r18_state)
    trained = MODELS.build(cfg.model)
    ckpt = tmp_path / 'trained.pth'
    torch.save(dict(state_dict=trained.state_dict()), ckpt)
    cached.unlink()  # the ImageNet file is gone and downloads fail (torch_home)
    model = init_estimator(cfg, str(ckpt))
    assert model.cfg.model.backbone.pretrained is None
    for key, value in trained.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
