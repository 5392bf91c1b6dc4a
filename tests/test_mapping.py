"""Cluster -> class mapping: Hungarian against brute force, majority vote, JSON round trip."""
import itertools

import numpy as np
import pytest

from clipae.eval.mapping import ClusterMapping, MappingError, build_mapping, count_matrix, hungarian, majority


def brute_force_best(counts: np.ndarray) -> int:
    k, c = counts.shape
    if k <= c:
        return max(sum(counts[i, p[i]] for i in range(k)) for p in itertools.permutations(range(c), k))
    return max(sum(counts[p[j], j] for j in range(c)) for p in itertools.permutations(range(k), c))


@pytest.mark.parametrize("shape", [(2, 2), (3, 3), (4, 4), (5, 5), (6, 6), (3, 5), (4, 6)])
def test_hungarian_matches_brute_force(shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(25):
        counts = rng.integers(0, 6, shape)
        assignment = hungarian(counts)
        assert len(set(assignment)) == shape[0]  # one-to-one
        assert sum(counts[k, c] for k, c in enumerate(assignment)) == brute_force_best(counts)


def test_more_clusters_than_classes_leftovers_take_their_majority():
    counts = np.array([[5, 0], [0, 4], [3, 1]])
    assert hungarian(counts) == [0, 1, 0]
    rng = np.random.default_rng(7)
    for _ in range(20):
        counts = rng.integers(0, 6, (5, 3))
        a, maj, best = hungarian(counts), majority(counts), brute_force_best(counts)
        # some 3 clusters with distinct classes reach the optimum, the other two take their majority
        assert any(len({a[r] for r in comb}) == 3 and sum(counts[r, a[r]] for r in comb) == best
                   and all(a[r] == maj[r] for r in set(range(5)) - set(comb))
                   for comb in itertools.combinations(range(5), 3))


def test_majority_vote_and_hungarian_differ_where_they_should():
    # cluster 0 and 1 both prefer class 0; Hungarian gives class 1 to one of them
    counts = np.array([[5, 1], [4, 3]])
    assert majority(counts) == [0, 0]
    assert hungarian(counts) == [0, 1]
    assert majority(np.array([[0, 0], [1, 2]])) == [None, 1]


def test_build_mapping_counts_each_label_of_a_video():
    assignments = {"a": 0, "b": 0, "c": 1, "d": 1, "e": 1}
    labels = {"a": ["X"], "b": ["X", "Y"], "c": ["Y"], "d": ["Y"], "e": ["X"]}
    counts = count_matrix(assignments, labels, 2, ["X", "Y"])
    np.testing.assert_array_equal(counts, [[2, 1], [1, 2]])
    m = build_mapping(assignments, labels, 2, ["X", "Y"])
    assert m.cluster_to_class == ["X", "Y"] and m.label(1) == "Y"
    assert m.matched_fraction() == pytest.approx(4 / 6)
    with pytest.raises(MappingError, match="outside"):
        count_matrix({"a": 5}, labels, 2, ["X", "Y"])
    with pytest.raises(MappingError, match="unknown mapping method"):
        build_mapping(assignments, labels, 2, ["X", "Y"], method="greedy")
    with pytest.raises(MappingError, match="no training video"):
        build_mapping({"zzz": 0}, labels, 2, ["X", "Y"])


def test_mapping_saved_as_json_reads_back(tmp_path):
    m = build_mapping({"a": 0, "b": 1}, {"a": ["Y"], "b": ["X"]}, 2, ["X", "Y"], method="majority")
    m.save(tmp_path / "map.json")
    back = ClusterMapping.load(tmp_path / "map.json")
    assert back.cluster_to_class == ["Y", "X"] and back.method == "majority"
    np.testing.assert_array_equal(back.counts, m.counts)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(MappingError):
        ClusterMapping.load(tmp_path / "bad.json")
