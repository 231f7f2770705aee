"""CapeFormer model behaviour on a tiny configuration (no official numbers: see
test_capeformer_parity.py): episode batching, shots, masking, options and errors."""
import pytest
import torch

from metapoint.models.losses import keypoint_target_maps
from metapoint.registry import MODELS
from metapoint.structures import make_episode_batch
from metapoint.utils import UnknownConfigKeyError, register_all_modules
from tests.helpers import disable_dropout

K = 8
SMALL = dict(num_layers=2, num_heads=4, ffn_dims=64, dropout=0.1)


def _model(**overrides):
    register_all_modules()
    cfg = dict(type='CapeFormer',
               backbone=dict(type='TorchvisionResNet', depth=18, out_indices=(3, )),
               embed_dims=32, encoder_cfg=SMALL, decoder_cfg=SMALL,
               proposal_cfg=dict(dynamic_dims=16), max_kpt_num=K)
    cfg.update(overrides)
    torch.manual_seed(0)
    return MODELS.build(cfg)


def _batch(b=2, s=1, q=1, seed=0, hidden=((0, 0, 6), (0, 0, 7))):
    """Random 128x128 episodes (4x4 C5 grid), heatmaps 16x16; ``hidden`` = (episode, shot,
    slot) support weights set to 0 (the slot's heatmap is zero too, as the pipeline makes it)."""
    g = torch.Generator().manual_seed(seed)
    s_kpts = 0.1 + 0.8 * torch.rand(b, s, K, 2, generator=g)
    q_kpts = 0.1 + 0.8 * torch.rand(b, q, K, 2, generator=g)
    s_w, q_w = torch.ones(b, s, K), torch.ones(b, q, K)
    for e, shot, slot in hidden:
        s_w[e, shot, slot] = 0
    q_w[:, :, 5] = 0
    s_hm = keypoint_target_maps(s_kpts.flatten(0, 1), (16, 16)).view(b, s, K, 16, 16)
    q_hm = keypoint_target_maps(q_kpts.flatten(0, 1), (16, 16)).view(b, q, K, 16, 16)
    return make_episode_batch(
        torch.randn(b, s, 3, 128, 128, generator=g), torch.randn(b, q, 3, 128, 128, generator=g),
        s_kpts, q_kpts, support_weights=s_w, query_weights=q_w,
        support_heatmaps=s_hm * s_w[..., None, None], query_heatmaps=q_hm * q_w[..., None, None])


def _episode(batch, b, q):
    """Episode b with only its query q (supports unchanged)."""
    return batch.select_episodes(b).select_queries(q)


def test_five_shot_multi_query_train_and_predict():
    model = _model()
    batch = _batch(b=2, s=5, q=3, hidden=((0, 2, 6), (1, 4, 1)))
    model.train()
    losses = model(batch, mode='loss')
    assert set(losses) == {'heatmap_loss', 'proposal_loss', 'l1_loss_layer0', 'l1_loss_layer1'}
    sum(losses.values()).backward()
    assert model.support_proj.weight.grad is not None
    model.eval()
    with torch.no_grad():
        preds = model(batch, mode='predict')  # identity crops: pixels of the 128 px input
    assert len(preds) == 2 and all(p['pred_kpts'].shape == (3, K, 2) for p in preds)
    assert all(p['pred_kpts'].min() >= 0 and p['pred_kpts'].max() <= 128 for p in preds)


def test_episode_batched_queries_equal_per_pair_predictions():
    """Q queries decoded together (support work once per episode) == each query alone."""
    model = _model().eval()
    batch = _batch(b=2, s=2, q=3, hidden=((0, 1, 6), (1, 0, 2)))
    with torch.no_grad():
        together = model.predict_points(batch)
        for b in range(2):
            for q in range(3):
                alone = model.predict_points(_episode(batch, b, q))[0, 0]
                torch.testing.assert_close(together[b, q], alone, atol=1e-5, rtol=0)


def test_masked_support_slots_do_not_change_real_slots():
    """A slot some shot does not see: its pooled feature is zeroed and it is no attention key,
    so its content (token, heatmap) does not reach the other slots' outputs."""
    model = _model().eval()
    disable_dropout(model)
    batch = _batch(b=1, s=2, q=2, hidden=((0, 1, 3), (0, 0, 6)))
    with torch.no_grad():
        feats = model.extract_features(batch)
        support = model.encode_support(feats[0], batch)
        assert support['mask'][0].tolist() == [1, 1, 1, 0, 1, 1, 0, 1]
        assert support['pooled'][0, [3, 6]].abs().sum() == 0
        base = model.decode_queries(feats[1], support, batch)
        support['tokens'][0, [3, 6]] = torch.randn(2, 32) * 10
        moved = model.decode_queries(feats[1], support, batch)
        shot_heatmaps = batch.support_heatmaps.clone()
        shot_heatmaps[0, 0, 3] = torch.rand(16, 16)  # seen by shot 0 only: still masked
        again = model.decode_queries(
            feats[1], model.encode_support(feats[0], batch.replace(support_heatmaps=shot_heatmaps)),
            batch)
    real = [0, 1, 2, 4, 5, 7]
    for other in (moved, again):
        for layer in range(2):
            torch.testing.assert_close(other['points'][layer][:, real],
                                       base['points'][layer][:, real], atol=1e-6, rtol=0)
        torch.testing.assert_close(other['similarity_map'][:, real],
                                   base['similarity_map'][:, real], atol=1e-5, rtol=0)


def test_learned_order_embedding_trains_one_step():
    model = _model(order_embedding='learned').train()
    assert model.order_embedding.weight.shape == (K, 32)
    before = model.order_embedding.weight.detach().clone()
    optim = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = model(_batch(), mode='loss')
    sum(losses.values()).backward()
    assert model.order_embedding.weight.grad.abs().sum() > 0
    optim.step()
    assert not torch.equal(model.order_embedding.weight, before)


def test_missing_heatmaps_and_bad_options_raise():
    model = _model().eval()
    with pytest.raises(KeyError, match='support_heatmaps'):
        model.predict_points(_batch().replace(support_heatmaps=None))
    with pytest.raises(KeyError, match='query heatmaps'):
        model.train()(_batch().replace(query_heatmaps=None), mode='loss')
    no_heatmap_loss = _model(criterion=dict(heatmap_weight=0)).train()
    assert 'heatmap_loss' not in no_heatmap_loss(_batch().replace(query_heatmaps=None),
                                                 mode='loss')
    with pytest.raises(UnknownConfigKeyError, match='num_layer'):
        _model(encoder_cfg=dict(num_layer=2))
    with pytest.raises(ValueError, match='order_embedding'):
        _model(order_embedding='sine')
    with pytest.raises(ValueError, match='max_kpt_num'):
        _model(max_kpt_num=10).predict_points(_batch())


def test_init_zeroes_the_coordinate_heads():
    """Official init: every layer first reports where its reference is (zero last layers)."""
    model = _model().eval()
    for head in model.decoder.point_heads:
        assert head.mlp[-1].weight.abs().sum() == 0 and head.mlp[-1].bias.abs().sum() == 0
    with torch.no_grad():
        out = model.run_episode(_batch())
    torch.testing.assert_close(out['points'][0], out['proposals_local'], atol=1e-6, rtol=0)
    torch.testing.assert_close(out['points'][1], out['proposals_local'], atol=1e-6, rtol=0)
