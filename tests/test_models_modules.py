"""CLIP-AE building blocks: config, data helpers, CAF (Eq. 1-3), CCP (Eq. 4-6), UGCT, losses (Eq. 7-9), clustering."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipae.models import clustering
from clipae.models.caf import CrossAttentionFusion, cross_attention
from clipae.models.ccp import CrossViewCollaboration
from clipae.models.clipae import build_model
from clipae.models.config import ConfigError, config_from_dict, load_config, save_config
from clipae.models.data import collate, epoch_order, sample_indices
from clipae.models.losses import (CLIPAELoss, InstanceDiscrimination, collaboration_loss, decorrelation_loss,
                                  mil_loss)
from clipae.models.ugct import TemporalConv, fuse_outputs, topk_pool, weighted_pool

torch.set_num_threads(1)
DIMS = {"i3d_rgb": 12, "i3d_flow": 10, "clip": 8, "vggish": 6}


def tiny_config(*overrides):
    return load_config(None, ["model.hidden_dim=16", "model.attention_dim=8", "model.caf_dim=8", "model.ccp_dim=8",
                              "model.dropout=0.0", *overrides])


def batch_of(lengths, has_audio, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    items = []
    for i, (t, a) in enumerate(zip(lengths, has_audio)):
        item = {s: torch.randn(t, d, generator=g) for s, d in DIMS.items()}
        item["has_audio"] = torch.tensor(a)
        item["index"] = torch.tensor(i)
        item["labels"] = F.one_hot(torch.tensor(i % k), k).float()
        items.append(item)
    return collate(items)


# ---- config ---------------------------------------------------------------------------------------

def test_config_yaml_then_overrides_typed_and_saved(tmp_path):
    cfg = load_config("thumos14", ["train.lr=1e-3", "model.use_caf=false", "data.streams.cbp=[a, b]",
                                   "cluster.method=spectral"])
    assert (cfg.data.train_subset, cfg.data.test_subset) == ("validation", "test")
    assert cfg.train.lr == 1e-3 and isinstance(cfg.train.lr, float)
    assert cfg.model.use_caf is False and cfg.data.streams.cbp == ["a", "b"]
    assert cfg.loss.temperature == 1.0 and cfg.cluster.num_clusters == 20
    anet = load_config("anet12")
    assert (anet.data.train_subset, anet.data.test_subset, anet.cluster.num_clusters) == ("training", "validation", 100)
    save_config(cfg, tmp_path / "c.yaml")
    import yaml
    assert config_from_dict(yaml.safe_load((tmp_path / "c.yaml").read_text())) == cfg


@pytest.mark.parametrize("override,msg", [("train.nope=1", "unknown config key 'train.nope'"),
                                          ("train.epochs_per_round=ten", "expected an integer"),
                                          ("model.use_ccp=3", "expected true/false"),
                                          ("train.mode=semi", "train.mode"), ("noequals", "key=value")])
def test_config_rejects_bad_values(override, msg):
    with pytest.raises(ConfigError, match=msg):
        load_config(None, [override])


@pytest.mark.parametrize("override,msg", [
    ("train.lr=-1e-3", "train.lr must be greater than 0, not -0.001"),
    ("train.lr=0", "train.lr must be greater than 0"),
    ("train.lr=.nan", "train.lr must be greater than 0, not nan"),
    ("train.lr=.inf", "train.lr must be greater than 0, not inf"),
    ("model.dropout=1.5", r"model.dropout must be in \[0, 1\), not 1.5"),
    ("model.dropout=1.0", r"model.dropout must be in \[0, 1\)"),
    ("cluster.num_clusters=0", "cluster.num_clusters must be at least 2, not 0"),
    ("cluster.n_init=0", "cluster.n_init must be at least 1"),
    ("train.weight_decay=-1", "train.weight_decay must be at least 0"),
    ("train.seed=-3", "train.seed must be at least 0"),
    ("train.num_workers=-1", "train.num_workers must be at least 0"),
    ("loss.temperature=0", "loss.temperature must be greater than 0"),
    ("loss.bank_momentum=2", r"loss.bank_momentum must be in \[0, 1\]"),
    ("loss.collab_threshold=-0.1", r"loss.collab_threshold must be in \[0, 1\]"),
    ("loss.topk_ratio=0", "loss.topk_ratio must be at least 1"),
    ("data.num_segments=0", "data.num_segments must be at least 1"),
    ("model.hidden_dim=0", "model.hidden_dim must be at least 1"),
    ("train.batch_size=0", "train.batch_size must be at least 1"),
])
def test_config_values_are_range_checked(override, msg):
    with pytest.raises(ConfigError, match=msg):
        load_config(None, [override])


def test_config_range_limits_are_allowed():
    cfg = load_config(None, ["model.dropout=0", "loss.bank_momentum=1", "cluster.num_clusters=2", "train.seed=0",
                             "loss.collab_warmup_epochs=0", "train.weight_decay=0"])
    assert cfg.model.dropout == 0 and cfg.cluster.num_clusters == 2


def test_required_streams_follow_the_switches():
    assert tiny_config().required_streams() == ["i3d_rgb", "i3d_flow", "clip", "vggish"]
    assert tiny_config("model.use_caf=false").required_streams() == ["i3d_rgb", "i3d_flow", "clip"]
    assert tiny_config("model.use_ccp=false", "model.use_caf=false").required_streams() == ["i3d_rgb", "i3d_flow"]


# ---- data helpers -------------------------------------------------------------------------------

def test_sampling_is_a_stratified_random_perturbation():
    rng = np.random.default_rng(0)
    idx = sample_indices(1000, 100, rng)
    assert len(idx) == 100 and np.all(np.diff(idx) > 0)               # one per span, in order
    assert np.all(idx // 10 == np.arange(100))                           # each inside its own span
    assert not np.array_equal(idx, sample_indices(1000, 100, np.random.default_rng(1)))
    np.testing.assert_array_equal(idx, sample_indices(1000, 100, np.random.default_rng(0)))
    short = sample_indices(7, 20, rng)                                   # short video: snippets repeat
    assert len(short) == 20 and short.min() >= 0 and short.max() <= 6 and len(set(short)) == 7
    np.testing.assert_array_equal(sample_indices(40, 4, None), [4, 14, 24, 34])


def test_collate_pads_and_masks():
    b = batch_of([5, 3], [True, False])
    assert b["i3d_rgb"].shape == (2, 5, 12) and b["mask"].tolist() == [[True] * 5, [True] * 3 + [False] * 2]
    assert torch.all(b["i3d_rgb"][1, 3:] == 0)


def test_epoch_order_shards_a_permutation():
    full = epoch_order(10, seed=3, epoch_key=2)
    assert sorted(full) == list(range(10)) and full == epoch_order(10, 3, 2) and full != epoch_order(10, 3, 1)
    r0, r1 = epoch_order(10, 3, 2, 0, 2), epoch_order(10, 3, 2, 1, 2)
    assert len(r0) == len(r1) == 5 and sorted(r0 + r1) == list(range(10))
    assert [x for pair in zip(r0, r1) for x in pair] == full             # batches of 2k = the same videos


# ---- CAF (Eq. 1-3) --------------------------------------------------------------------------------

def test_cross_attention_is_eq1_eq2_in_the_papers_column_layout():
    torch.manual_seed(0)
    t, d = 6, 4
    xa, xv, w = torch.randn(1, t, d), torch.randn(1, t, d), torch.randn(d, d)
    ones = torch.ones(1, t, dtype=torch.bool)
    out = cross_attention(xa, xv, w, ones, ones)
    # paper layout: X ∈ R^{d×L}, columns L2-normalised for Λ = X_audioᵀ W X_CBP (Eq. 1)
    Xa, Xv = xa[0].T, xv[0].T
    lam = F.normalize(Xa, dim=0).T @ w @ F.normalize(Xv, dim=0)
    a_audio = lam.softmax(dim=0)                                          # softmax over the columns of Λ
    a_cbp = lam.T.softmax(dim=0)                                          # ... and of Λᵀ
    torch.testing.assert_close(out["lam"][0], lam)
    torch.testing.assert_close(out["a_audio"][0], a_audio)
    torch.testing.assert_close(out["a_cbp"][0], a_cbp)
    torch.testing.assert_close(out["a_audio"][0].sum(0), torch.ones(t))  # columns sum to 1
    torch.testing.assert_close(out["x_audio"][0].T, Xa @ a_audio)        # Eq. 2: X̃ = X A
    torch.testing.assert_close(out["x_cbp"][0].T, Xv @ a_cbp)


def test_caf_stages_are_dense_skips_with_tanh():
    torch.manual_seed(0)
    caf = CrossAttentionFusion(audio_dim=6, cbp_dim=22, dim=8, stages=3)
    mask = torch.ones(2, 7, dtype=torch.bool)
    out = caf(torch.randn(2, 7, 6), torch.randn(2, 7, 22), mask, torch.tensor([True, True]), return_stages=True)
    assert out["audio"].shape == out["cbp"].shape == (2, 7, 8) and len(out["chi_audio"]) == 4
    for name in ("audio", "cbp"):
        chi, tilde = out[f"chi_{name}"], out[f"tilde_{name}"]
        for t in range(1, 4):                                             # Eq. 3
            torch.testing.assert_close(chi[t], torch.tanh(sum(chi[:t]) + tilde[t - 1]))
        torch.testing.assert_close(out[name], chi[-1])
    assert len(list(caf.weights)) == 3                                   # one learnable W per stage


def test_caf_ignores_the_placeholder_audio_of_videos_without_audio():
    torch.manual_seed(0)
    caf = CrossAttentionFusion(6, 22, 8, 2)
    mask = torch.ones(2, 5, dtype=torch.bool)
    cbp = torch.randn(2, 5, 22)
    has = torch.tensor([True, False])
    a1, a2 = torch.randn(2, 5, 6), torch.randn(2, 5, 6)
    a2[0] = a1[0]
    o1, o2 = caf(a1, cbp, mask, has), caf(a2, cbp, mask, has)
    torch.testing.assert_close(o1["cbp"][1], o2["cbp"][1])               # garbage rows change nothing
    assert torch.all(o1["audio"][1] == 0)
    caf.zero_grad()
    o1["cbp"][1].sum().backward()
    assert torch.all(caf.encode_audio.weight.grad == 0)                  # nothing learned from them


def test_model_output_for_no_audio_video_does_not_depend_on_its_vggish_rows():
    torch.manual_seed(0)
    model = build_model(tiny_config(), DIMS, 3).eval()
    b = batch_of([9], [False])
    out1 = model.predict(b)
    b["vggish"] = torch.randn_like(b["vggish"]) * 100
    out2 = model.predict(b)
    for k in out1:
        torch.testing.assert_close(out1[k], out2[k])


# ---- CCP (Eq. 4-6) --------------------------------------------------------------------------------

def test_ccp_queries_keys_from_m_values_from_each_view():
    torch.manual_seed(0)
    ccp = CrossViewCollaboration(cbp_dim=22, vlp_dim=8, dim=5)
    x_cbp, x_vlp = torch.randn(1, 7, 22), torch.randn(1, 7, 8)
    mask = torch.ones(1, 7, dtype=torch.bool)
    out = ccp(x_cbp, x_vlp, mask)
    m = torch.cat([x_cbp, x_vlp], -1)[0]                                   # Eq. 4
    for view, x in (("cbp", x_cbp[0]), ("vlp", x_vlp[0])):               # Eq. 5 / 6
        va = getattr(ccp, view)
        q, k, v = m @ va.w_q.weight.T, m @ va.w_k.weight.T, x @ va.w_v.weight.T
        torch.testing.assert_close(out[view][0], ((q @ k.T) / math.sqrt(5)).softmax(-1) @ v)
    # VLP reaches Z_CBP only through the attention weights: with W^Q = 0 the weights are uniform
    with torch.no_grad():
        ccp.cbp.w_q.weight.zero_()
    z1 = ccp(x_cbp, x_vlp, mask)["cbp"]
    z2 = ccp(x_cbp, torch.randn(1, 7, 8), mask)["cbp"]
    torch.testing.assert_close(z1, z2)
    torch.testing.assert_close(z1[0], (x_cbp[0] @ ccp.cbp.w_v.weight.T).mean(0).expand(7, 5))


# ---- UGCT -----------------------------------------------------------------------------------------

def test_temporal_conv_equals_conv1d_kernel3():
    torch.manual_seed(0)
    tc = TemporalConv(5, 4)
    with torch.no_grad():
        tc.bias.normal_()
    conv = torch.nn.Conv1d(5, 4, 3, padding=1)
    w = tc.proj.weight.view(3, 4, 5)                                      # taps t-1, t, t+1
    with torch.no_grad():
        conv.weight.copy_(w.permute(1, 2, 0))
        conv.bias.copy_(tc.bias)
    x = torch.randn(2, 9, 5)
    torch.testing.assert_close(tc(x), conv(x.transpose(1, 2)).transpose(1, 2))


def test_topk_pool_uses_ceil_t_over_ratio_of_valid_snippets():
    logits = torch.arange(10.0).view(1, 10, 1).repeat(2, 1, 1)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 5:] = False
    pooled = topk_pool(logits, mask, ratio=4)                             # k = 3 and k = 2
    assert pooled[:, 0].tolist() == [(9 + 8 + 7) / 3, (4 + 3) / 2]


def test_a_video_gets_the_same_outputs_alone_or_padded_in_a_batch():
    torch.manual_seed(0)
    model = build_model(tiny_config(), DIMS, 3).eval()
    b = batch_of([9, 4], [True, True])
    alone = collate([{k: (v[1, :4] if v.ndim == 3 else v[1]) for k, v in b.items() if k != "mask"}])
    both, one = model.predict(b), model.predict(alone)
    torch.testing.assert_close(both["attention"][1, :4], one["attention"][0])
    torch.testing.assert_close(both["cas"][1, :4], one["cas"][0])
    torch.testing.assert_close(both["video_scores"][1], one["video_scores"][0])


def test_outputs_are_probabilities_with_documented_shapes():
    torch.manual_seed(0)
    out = build_model(tiny_config(), DIMS, 3).eval().predict(batch_of([6, 8], [True, False]))
    assert out["cas"].shape == (2, 8, 3) and out["attention"].shape == (2, 8) and out["video_scores"].shape == (2, 3)
    for v in out.values():
        assert v.min() >= 0 and v.max() <= 1
    torch.testing.assert_close(out["video_scores"].sum(-1), torch.ones(2))


def test_each_switch_changes_the_model():
    def params(*o):
        torch.manual_seed(0)
        return {n for n, _ in build_model(tiny_config(*o), DIMS, 3).named_parameters()}
    full = params()
    no_caf, no_ccp = params("model.use_caf=false"), params("model.use_ccp=false")
    base = params("model.use_caf=false", "model.use_ccp=false")
    assert any(n.startswith("caf.") for n in full) and not any(n.startswith("caf.") for n in no_caf)
    assert any(n.startswith("ccp.") for n in full) and not any(n.startswith("ccp.") for n in no_ccp)
    assert not any(n.startswith(("caf.", "ccp.")) for n in base)
    assert not any("filter_c" in n for n in base)                         # baseline: attention from own stream only
    b = batch_of([8, 8], [True, True])
    parts = {}
    for name, o in (("ssl", ()), ("no_ssl", ("loss.use_ssl=false",))):
        cfg = tiny_config(*o)
        torch.manual_seed(0)
        model = build_model(cfg, DIMS, 3)
        parts[name] = CLIPAELoss(cfg.loss, 2, 8)(model(b), b["labels"], b["index"], True)
    assert "decor" in parts["ssl"] and "insdis" in parts["ssl"] and not {"decor", "insdis"} & set(parts["no_ssl"])
    assert parts["ssl"]["total"] != parts["no_ssl"]["total"]


def test_background_contrast_discounts_what_is_on_every_snippet():
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 5:] = False
    streams = {s: {"cas_logits": torch.randn(2, 7, 3, generator=g), "attention": torch.rand(2, 7, generator=g)}
               for s in ("rgb", "flow")}
    scene = torch.tensor([4.0, 0.0, 0.0])                        # one class's logit raised on every snippet
    with_scene = {s: {**o, "cas_logits": o["cas_logits"] + scene} for s, o in streams.items()}
    for beta in (0.0, 0.5, 1.0):
        want = sum((weighted_pool(o["cas_logits"], o["attention"], mask)
                    - beta * weighted_pool(o["cas_logits"], 1 - o["attention"], mask)).softmax(-1)
                   for o in with_scene.values()) / 2
        torch.testing.assert_close(fuse_outputs(with_scene, mask, beta)["video_scores"], want)
    # beta = 1 cancels the offset exactly; beta = 0.5 keeps half of it (0: STPN, all of it)
    torch.testing.assert_close(fuse_outputs(with_scene, mask, 1.0)["video_scores"],
                               fuse_outputs(streams, mask, 1.0)["video_scores"])
    lift = [fuse_outputs(with_scene, mask, b)["video_scores"][:, 0].mean() for b in (0.0, 0.5, 1.0)]
    assert lift[0] > lift[1] > lift[2]
    assert torch.equal(fuse_outputs(with_scene, mask, 0.5)["cas"], fuse_outputs(with_scene, mask, 0.0)["cas"])


def test_background_contrast_setting_reaches_the_models_video_scores():
    b = batch_of([9, 6], [True, False])
    outs = {}
    for beta in (0.0, 0.5):
        torch.manual_seed(0)
        model = build_model(tiny_config(f"model.background_contrast={beta}"), DIMS, 3).eval()
        streams = model(b)["streams"]
        outs[beta] = model.predict(b)["video_scores"]
        torch.testing.assert_close(outs[beta], fuse_outputs(streams, b["mask"], beta)["video_scores"])
    assert not torch.allclose(outs[0.0], outs[0.5])
    assert load_config(None).model.background_contrast == 0.5


# ---- losses ---------------------------------------------------------------------------------------

def test_decorrelation_eq7_is_zero_only_for_orthogonal_dimensions():
    mask = torch.ones(1, 4, dtype=torch.bool)
    eye = torch.eye(4)[None] * 3.0                                        # orthogonal dims (any scale)
    assert decorrelation_loss(eye, mask).item() == pytest.approx(0.0, abs=1e-6)
    same = torch.ones(1, 4, 2)                                            # two identical dims
    assert decorrelation_loss(same, mask).item() == pytest.approx(2 / 2)  # two off-diagonal ones, / d
    padded = torch.cat([eye, torch.randn(1, 3, 4)], 1)
    m2 = torch.tensor([[True] * 4 + [False] * 3])
    assert decorrelation_loss(padded, m2).item() == pytest.approx(0.0, abs=1e-6)


def test_instance_discrimination_eq8_and_momentum_bank():
    torch.manual_seed(0)
    nce = InstanceDiscrimination(num_videos=5, dim=3, temperature=1.0, momentum=0.5)
    z = {"cbp": torch.randn(2, 4, 3), "vlp": torch.randn(2, 4, 3)}
    mask = torch.ones(2, 4, dtype=torch.bool)
    index = torch.tensor([3, 1])
    loss, pooled = nce(z, mask, index)
    expected = 0.0
    for v in ("cbp", "vlp"):
        zz = F.normalize(z[v].mean(1), dim=1)
        bank = getattr(nce, f"bank_{v}")
        expected += -(torch.exp(zz @ bank.T / 1.0)[range(2), index] / torch.exp(zz @ bank.T).sum(1)).log().mean()
    torch.testing.assert_close(loss, expected)
    before = nce.bank_cbp.clone()
    nce.update(pooled, index)
    torch.testing.assert_close(nce.bank_cbp[3], F.normalize(0.5 * before[3] + 0.5 * pooled["cbp"][0], dim=0))
    torch.testing.assert_close(nce.bank_cbp[0], before[0])


def test_collaboration_uses_the_other_streams_binarised_attention_weighted_by_uncertainty():
    mask = torch.ones(1, 3, dtype=torch.bool)
    teacher = {"attention": torch.tensor([[0.9, 0.2, 0.7]])}
    student = {"attention": torch.tensor([[0.5, 0.5, 0.5]], requires_grad=True), "log_var": torch.zeros(1, 3)}
    loss = collaboration_loss(student, teacher, mask, threshold=0.5)
    assert loss.item() == pytest.approx(0.25)                             # targets 1, 0, 1
    loss.backward()
    assert student["attention"].grad.tolist()[0] == pytest.approx([-1 / 3, 1 / 3, -1 / 3])
    unsure = {"attention": student["attention"], "log_var": torch.tensor([[2.0, 0.0, 0.0]])}
    s = torch.tensor(2.0)
    assert collaboration_loss(unsure, teacher, mask, 0.5).item() == pytest.approx(
        ((torch.exp(-s) * 0.25 + s) + 0.25 + 0.25).item() / 3)           # high σ²: its error counts less


def test_mil_loss_prefers_the_true_class():
    logits = torch.zeros(1, 8, 3)
    logits[0, :2, 1] = 5.0
    stream = {"cas_logits": logits, "attention": torch.tensor([[1.0, 1.0] + [0.0] * 6])}
    mask = torch.ones(1, 8, dtype=torch.bool)
    right = mil_loss(stream, torch.tensor([[0.0, 1.0, 0.0]]), mask, ratio=4)
    wrong = mil_loss(stream, torch.tensor([[1.0, 0.0, 0.0]]), mask, ratio=4)
    assert right < 0.1 < wrong


def test_attention_loss_against_the_background_rewards_attending_the_action():
    """A video whose class is also its scene (class 1 on every snippet) with the action on snippets
    2-3: from the foreground pooling alone, attending the background or the action is about equally
    good; against the background (loss.background_contrast = 1) only attending the action is."""
    logits = torch.zeros(1, 10, 3)
    logits[0, :, 1] = 5.0                                                # the scene: class 1 everywhere
    logits[0, 2:4, 1] += 1.0                                             # the action
    on_action = torch.zeros(1, 10)
    on_action[0, 2:4] = 1.0
    on_scene = 1.0 - on_action
    mask = torch.ones(1, 10, dtype=torch.bool)
    label = torch.tensor([[0.0, 1.0, 0.0]])

    def loss(att, beta):
        return mil_loss({"cas_logits": logits, "attention": att}, label, mask, 4, beta).item()

    gap = {beta: loss(on_scene, beta) - loss(on_action, beta) for beta in (0.0, 1.0)}
    assert 0 < gap[0.0] < 0.05                                           # fg pooling: the scene almost suffices
    assert gap[1.0] > 0.5                                                # against the background it does not


def test_attention_loss_background_contrast_setting_reaches_the_loss():
    assert load_config(None).loss.background_contrast == 1.0
    cfg = tiny_config("loss.background_contrast=1")
    model = build_model(cfg, DIMS, 3)
    batch = batch_of([10, 7], [True, False])
    losses = {beta: CLIPAELoss(tiny_config(f"loss.background_contrast={beta}").loss, 2, 8)
              for beta in (0.0, 1.0)}
    torch.manual_seed(0)
    out = model(batch)
    parts = {beta: fn(out, batch["labels"], batch["index"], collab_on=False) for beta, fn in losses.items()}
    assert parts[1.0]["mil"].item() != pytest.approx(parts[0.0]["mil"].item())
    with pytest.raises(ConfigError):
        tiny_config("loss.background_contrast=1.5")


# ---- clustering -----------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["kmeans", "spectral"])
def test_clustering_recovers_separated_groups(method):
    rng = np.random.default_rng(0)
    centres = np.eye(3) * 5
    truth = np.repeat(np.arange(3), 10)
    emb = centres[truth] + rng.normal(scale=0.3, size=(30, 3))
    labels, c = clustering.cluster(emb, 3, method, seed=0)
    assert clustering.cluster_scores(labels, truth) == {"nmi": pytest.approx(1.0), "ari": pytest.approx(1.0),
                                                        "acc": pytest.approx(1.0)}
    assert c.shape == (3, 3)


def test_align_clusters_keeps_ids_stable_across_rounds():
    prev = np.array([0, 0, 1, 1, 2, 2])
    new = np.array([2, 2, 0, 0, 1, 1])                                   # same groups, other ids
    np.testing.assert_array_equal(clustering.align_clusters(prev, new, 3), prev)


def test_clustering_methods_are_one_table_the_config_checks():
    from clipae.models.config import ConfigError, load_config
    assert set(clustering.METHODS) == {"kmeans", "spectral"}
    with pytest.raises(ConfigError, match="cluster.method must be one of kmeans, spectral"):
        load_config(None, ["cluster.method=dbscan"])
    with pytest.raises(ValueError, match="unknown clustering method"):
        clustering.cluster(np.zeros((4, 2)), 2, "dbscan", 0)
