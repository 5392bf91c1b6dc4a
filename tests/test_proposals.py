"""Proposals from T-CAM and attention: runs, the contrast score, NMS, and seconds on the grid."""
import numpy as np
import pytest

from clipae.eval.proposals import (ProposalConfig, ProposalConfigError, contrast_scores, generate_proposals, minmax,
                                   runs)
from clipae.core.grid import SnippetGrid

GRID = SnippetGrid()  # 25 fps, 16-frame snippets, stride 16


def cfg(**kw):
    base = dict(normalize=False, cas_thresholds=(0.5,), attention_thresholds=(), class_threshold=0.2)
    base.update(kw)
    return ProposalConfig(**base)


def test_runs_of_a_mask_including_the_edges():
    mask = np.array([[1, 1, 0, 0, 1, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1, 1]], bool)
    first, last = runs(mask)
    assert first.tolist() == [0, 4, 6, 0] and last.tolist() == [1, 4, 8, 8]


def test_outer_inner_contrast_by_hand():
    cas = np.array([0, 0, 0, 0.4, 1, 1, 1, 1, 0.4, 0])
    # run [4, 7]: L = 4, outer = [floor(4 - 1), 4) + (7, floor(7 + 1)] = {3, 8}
    assert contrast_scores(cas, np.array([4]), np.array([7]), 0.25)[0] == pytest.approx(1 - 0.4)
    # a run touching both ends has no outer region: outer mean 0
    assert contrast_scores(cas, np.array([0]), np.array([9]), 0.25)[0] == pytest.approx(cas.mean())
    # L = 1: floor(5 - 0.25) = 4 -> outer {4} on the left, floor(5.25) = 5 -> nothing on the right
    assert contrast_scores(cas, np.array([5]), np.array([5]), 0.25)[0] == pytest.approx(0.0)


def test_score_seconds_and_grid():
    cas = np.zeros((10, 2))
    cas[4:8, 1] = 1.0
    cas[3, 1] = cas[8, 1] = 0.4
    p = generate_proposals(cas, np.zeros(10), np.array([0.1, 0.8]), GRID, None, cfg())
    assert len(p) == 1 and p.column[0] == 1
    assert p.score[0] == pytest.approx(1 - 0.4 + 0.2 * 0.8)
    # snippet i spans [16 i / 25, (16 i + 16) / 25): run [4, 7] -> [2.56, 5.12]
    assert (p.start[0], p.end[0]) == pytest.approx((4 * 16 / 25, 8 * 16 / 25))
    assert (p.first[0], p.last[0]) == (4, 7)
    # an overlapping grid: stride 4, length 16 -> [4*4/25, (7*4 + 16)/25]
    q = generate_proposals(cas, np.zeros(10), np.array([0.1, 0.8]), SnippetGrid(25, 16, 4), None, cfg())
    assert (q.start[0], q.end[0]) == pytest.approx((16 / 25, 44 / 25))


def test_last_segment_is_clipped_to_the_duration():
    cas = np.zeros((10, 1))
    cas[7:, 0] = 1.0
    p = generate_proposals(cas, np.zeros(10), np.array([0.9]), GRID, 6.1, cfg())
    assert p.end[0] == pytest.approx(6.1) and p.start[0] == pytest.approx(7 * 0.64)


def test_classes_kept_by_video_score():
    cas = np.ones((6, 3)) * np.array([0, 1, 0])
    cas[[0, 5]] = 0
    scores = np.array([0.1, 0.05, 0.15])
    # none reaches 0.2: the best column (2) is kept, although its T-CAM is flat zero: no run
    assert len(generate_proposals(cas, np.zeros(6), scores, GRID, None, cfg())) == 0
    p = generate_proposals(cas, np.zeros(6), scores, GRID, None, cfg(class_threshold=0.05))
    assert set(p.column.tolist()) == {1}
    assert len(generate_proposals(cas, np.zeros(6), scores, GRID, None, cfg(keep_top_class=False))) == 0


def test_attention_thresholds_give_proposals_for_every_kept_class():
    att = np.array([0, 0.9, 0.9, 0.9, 0, 0, 0.6, 0.6, 0])
    cas = np.zeros((9, 2))
    cas[1:4, 0] = 1.0
    cas[6:8, 1] = 1.0
    p = generate_proposals(cas, att, np.array([0.9, 0.9]), GRID, None,
                           cfg(cas_thresholds=(), attention_thresholds=(0.5,), nms="hard"))
    got = {(int(k), int(a), int(b)) for k, a, b in zip(p.column, p.first, p.last)}
    assert got == {(0, 1, 3), (0, 6, 7), (1, 1, 3), (1, 6, 7)}
    # the score of a run comes from its class's T-CAM: the two runs where each class fires rank first
    top = {(int(k), int(a), int(b)) for k, a, b in zip(p.column[:2], p.first[:2], p.last[:2])}
    assert top == {(0, 1, 3), (1, 6, 7)}
    assert p.score[1] > p.score[2]


def test_same_run_at_several_thresholds_is_kept_once():
    cas = np.zeros((8, 1))
    cas[2:5, 0] = 1.0
    p = generate_proposals(cas, np.zeros(8), np.array([0.9]), GRID, None, cfg(cas_thresholds=(0.1, 0.3, 0.5, 0.7)))
    assert len(p) == 1


def test_soft_nms_decays_and_hard_nms_drops():
    cas = np.zeros((12, 1))
    cas[2:8, 0] = [0.6, 0.9, 1, 1, 0.9, 0.6]
    soft = generate_proposals(cas, np.zeros(12), np.array([0.9]), GRID, None, cfg(cas_thresholds=(0.5, 0.95)))
    assert len(soft) == 2  # [2, 7] and [4, 5]
    hard = generate_proposals(cas, np.zeros(12), np.array([0.9]), GRID, None,
                              cfg(cas_thresholds=(0.5, 0.95), nms="hard", nms_threshold=0.3))
    assert len(hard) == 1
    # soft-NMS: the second proposal's score is multiplied by exp(-IoU^2 / sigma), IoU = 2 / 6
    i = int(np.argmax(soft.score))
    raw = contrast_scores(cas[:, 0], soft.first, soft.last, 0.25) + 0.2 * 0.9
    assert soft.score[i] == pytest.approx(raw[i])
    assert soft.score[1 - i] == pytest.approx(raw[1 - i] * np.exp(-(1 / 3) ** 2 / 0.3))


def test_max_per_video_and_order():
    rng = np.random.default_rng(0)
    cas = rng.random((60, 3))
    p = generate_proposals(cas, rng.random(60), np.array([0.5, 0.6, 0.7]), GRID, None, ProposalConfig())
    assert len(p) > 20 and np.all(np.diff(p.score) <= 0)
    assert np.all(p.end > p.start)
    q = generate_proposals(cas, rng.random(60), np.array([0.5, 0.6, 0.7]), GRID, None, ProposalConfig(max_per_video=20))
    assert len(q) == 20


def test_minmax_as_cola():
    x = np.array([[0.2, 0.5], [0.6, 0.5], [1.0, 0.5]])
    np.testing.assert_allclose(minmax(x), [[0, 0], [0.5, 0], [1, 0]])  # a flat column gives no run


def test_config_from_dict_and_errors():
    c = ProposalConfig.from_dict({"nms": "hard", "cas_thresholds": [0.1, 0.2]})
    assert c.nms == "hard" and c.cas_thresholds == [0.1, 0.2]   # lists: a run's config.yaml holds them
    assert ProposalConfig.from_dict(None) == ProposalConfig()
    with pytest.raises(ProposalConfigError, match="unknown proposal setting"):
        ProposalConfig.from_dict({"nms_sigma": 0.3})
    with pytest.raises(ProposalConfigError, match="nms must be one of"):
        ProposalConfig(nms="fancy")
    with pytest.raises(ValueError, match="shapes do not agree"):
        generate_proposals(np.zeros((5, 2)), np.zeros(4), np.zeros(2), GRID, None, ProposalConfig())
