"""Blocked top-K against a brute-force reference: same lists, exclusions, cosine scores, threshold."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.model.topk import ItemMatrix, numpy_top_k, recommend_top_k, top_k_block


@pytest.fixture(scope="module")
def factors(spark):
    rng = np.random.default_rng(5)
    users, items = rng.normal(size=(300, 8)).astype(np.float32), rng.normal(size=(90, 8)).astype(np.float32)
    item_ids = rng.permutation(np.arange(1000, 1090))  # ids need not be dense or sorted
    seen = {u: set(rng.choice(item_ids, size=rng.integers(0, 40), replace=False).tolist()) for u in range(300)}
    user_df = spark.createDataFrame([(u, users[u].tolist()) for u in range(300)], "id int, features array<float>")
    item_df = spark.createDataFrame([(int(i), items[n].tolist()) for n, i in enumerate(item_ids)],
                                    "id int, features array<float>")
    seen_df = spark.createDataFrame([(u, int(a)) for u, s in seen.items() for a in s], "user_idx int, artist_idx int")
    return users, items, item_ids, seen, user_df.repartition(3), item_df, seen_df


def _brute_force(users, items, item_ids, seen, k, threshold=None):
    expected = {}
    for u in range(len(users)):
        dots = items @ users[u]
        cos = dots / (np.linalg.norm(items, axis=1) * np.linalg.norm(users[u]))
        ranked = sorted((i for i in range(len(items)) if int(item_ids[i]) not in seen.get(u, ())),
                        key=lambda i: (-dots[i], item_ids[i]))[:k]
        expected[u] = [(int(item_ids[i]), float(cos[i])) for i in ranked if threshold is None or cos[i] >= threshold]
    return expected


def _collect(df):
    got = {}
    for row in df.orderBy("user_idx", "rank").collect():
        got.setdefault(row.user_idx, []).append((row.artist_idx, row.score, row.rank))
    return got


@pytest.mark.parametrize("block", [256, 7])  # recommend.block_users: any block size, same lists
def test_top_k_equals_brute_force_excluding_seen(factors, block):
    users, items, item_ids, seen, user_df, item_df, seen_df = factors
    got = _collect(recommend_top_k(user_df, item_df, 10, seen_df, block=block))
    expected = _brute_force(users, items, item_ids, seen, 10)
    assert set(got) == set(range(300))
    for u, want in expected.items():
        assert [a for a, _, _ in got[u]] == [a for a, _ in want]
        assert [r for _, _, r in got[u]] == list(range(1, 11))
        np.testing.assert_allclose([s for _, s, _ in got[u]], [s for _, s in want], atol=1e-5)


def test_threshold_keeps_only_scores_at_or_above_it(factors):
    users, items, item_ids, seen, user_df, item_df, seen_df = factors
    got = _collect(recommend_top_k(user_df, item_df, 10, seen_df, threshold=0.3))
    expected = _brute_force(users, items, item_ids, seen, 10, threshold=0.3)
    want = {u: [a for a, _ in rows] for u, rows in expected.items() if rows}
    assert {u: [a for a, _, _ in rows] for u, rows in got.items()} == want
    assert all(-1.0 <= s <= 1.0 for rows in got.values() for _, s, _ in rows)
    assert min(s for rows in got.values() for _, s, _ in rows) >= 0.3


def test_users_who_have_seen_everything_get_nothing(spark, factors):
    _, _, item_ids, _, user_df, item_df, _ = factors
    everything = spark.createDataFrame([(7, int(a)) for a in item_ids], "user_idx int, artist_idx int")
    got = recommend_top_k(user_df.filter("id in (7, 8)"), item_df, 200, everything)
    per_user = {r.user_idx: r["count"] for r in got.groupBy("user_idx").count().collect()}
    assert per_user == {8: 90}  # k larger than the catalog: the whole catalog, and nothing for user 7


def test_numpy_floor_gives_the_same_lists(factors):
    users, items, item_ids, _, _, _, _ = factors
    rows, _ = numpy_top_k(users, ItemMatrix(item_ids, items), 5, block=64)
    want = _brute_force(users, items, item_ids, {}, 5)
    assert [[int(item_ids[np.argsort(item_ids)][r]) for r in row] for row in rows] == \
        [[a for a, _ in want[u]] for u in range(len(users))]


@pytest.mark.parametrize("n_items", [500, 3000])  # below and above the chunked prefilter's size
def test_selection_is_exact_with_exclusions_and_ties(n_items):
    rng = np.random.default_rng(9)
    users = rng.normal(size=(200, 6)).astype(np.float32)
    items = rng.normal(size=(n_items, 6)).astype(np.float32)
    if n_items == 500:
        items[100:110] = items[5]  # ten identical artists: ties broken by artist id
    matrix = ItemMatrix(np.arange(n_items), items)
    seen = [rng.choice(n_items, size=rng.integers(0, n_items - 20), replace=False) for _ in range(200)]
    fast, fast_dots = top_k_block(users, matrix, 20, seen, prefilter=True)
    plain, plain_dots = top_k_block(users, matrix, 20, seen, prefilter=False)
    assert (fast == plain).all() and np.array_equal(fast_dots, plain_dots)
    for u in range(5):  # and both match sorting everything
        scores = items @ users[u]
        excluded = set(seen[u].tolist())
        order = [i for i in sorted(range(n_items), key=lambda i: (-scores[i], i)) if i not in excluded][:20]
        assert [r for r in fast[u] if r >= 0] == order
