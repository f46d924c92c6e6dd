"""utils/stats.py on known answers: resampled mAP equals val's mAP on the resampled images, a model
against itself, a simulated difference whose 95% interval must cover it."""

from __future__ import annotations

import numpy as np
import pytest

from utils.metrics import summarize
from utils.stats import Difference, MatchStats, compare, compare_many, image_resamples, mean_map, resampled_maps, seed_spread

IOU = np.linspace(0.5, 0.95, 10)


def simulated_images(rng: np.random.Generator, n: int, recalls: tuple[float, ...], n_cls: int = 3,
                     fp_rate: float = 1.0) -> list[list[tuple]]:
    """Per model (one per entry of `recalls`), val.py-style per-image rows on the same `n` labelled images:
    each label is found with the model's recall at a random localisation quality, plus Poisson false alarms."""
    out = [[] for _ in recalls]
    for i in range(n):
        tcls = rng.integers(0, n_cls, rng.integers(1, 4))
        for rows, recall in zip(out, recalls):
            tp, conf, pcls = [], [], []
            for c in tcls:
                if rng.random() < recall:
                    tp.append(IOU <= 0.5 + 0.5 * rng.random())
                    conf.append(rng.beta(5, 2))
                    pcls.append(c)
            for _ in range(rng.poisson(fp_rate)):
                tp.append(np.zeros(10, bool))
                conf.append(rng.beta(2, 5))
                pcls.append(rng.integers(0, n_cls))
            rows.append((f"im{i}.jpg", np.array(tp, bool).reshape(-1, 10), np.array(conf, np.float32),
                         np.array(pcls), tcls))
    return out


@pytest.fixture(scope="module")
def two_models():
    a, b = simulated_images(np.random.default_rng(0), 120, (0.85, 0.7))
    return a, b


def test_plain_map_equals_val(two_models):
    rows = two_models[0]
    s = summarize([r[1:] for r in rows], 3)
    assert mean_map([MatchStats.from_val(rows)]) == pytest.approx((s.map50, s.map), abs=1e-12)


def test_resampled_map_equals_val_on_the_resampled_images(two_models):
    rows = two_models[1]
    stats = MatchStats.from_val(rows)
    counts = image_resamples(len(rows), 5, np.random.default_rng(3))
    got = resampled_maps(stats, counts)
    for c, (m50, m) in zip(counts, got):
        drawn = [rows[i][1:] for i in range(len(rows)) for _ in range(c[i])]  # image i drawn c[i] times
        s = summarize(drawn, 3)
        assert (m50, m) == pytest.approx((s.map50, s.map), abs=1e-12)


def test_a_model_against_itself_is_no_detectable_difference(two_models):
    s = MatchStats.from_val(two_models[0])
    d = compare([s], [s], n_boot=200)
    for m in ("mAP50", "mAP50-95"):
        assert d[m].delta == 0.0 and d[m].low <= 0 <= d[m].high
        assert d[m].verdict == "no detectable difference"


def test_a_clearly_worse_model_is_worse_and_deterministic(two_models):
    a, b = (MatchStats.from_val(r) for r in two_models)
    d = compare([a], [b], n_boot=300, seed=1)
    assert d["mAP50"].delta < 0 and d["mAP50"].high < 0 and d["mAP50"].verdict == "worse"
    assert compare([a], [b], n_boot=300, seed=1) == d  # the same bootstrap seed, the same interval
    assert compare([b], [a], n_boot=300, seed=1)["mAP50"].verdict == "better"
    assert compare([a], [b], n_boot=300, seed=2)["mAP50"].low != d["mAP50"].low


def test_detectable_size_and_description():
    d = Difference("mAP50-95", 0.004, -0.01, 0.018, 0.007, 0.0196)
    assert d.verdict == "no detectable difference" and d.describe() == "no detectable difference (±0.020)"
    assert d.interval() == "[-0.010, +0.018]"
    assert Difference("mAP50", 0.03, 0.01, 0.05, 0.01, 0.028).describe() == "better"


def test_images_are_paired_by_path_whatever_their_order(two_models, tmp_path):
    a, b = two_models
    sa = MatchStats.from_val(a)
    shuffled = MatchStats.from_val(b[::-1])
    assert compare([sa], [shuffled], n_boot=50) == compare([sa], [MatchStats.from_val(b)], n_boot=50)
    back = MatchStats.load(sa.save(tmp_path / "s.npz"))
    assert back.images == sa.images and np.array_equal(back.tp, sa.tp) and np.array_equal(back.conf, sa.conf)
    with pytest.raises(ValueError, match="different images"):
        compare([sa], [MatchStats.from_val(b[:-1])], n_boot=50)
    with pytest.raises(ValueError, match="not a match-statistics file"):
        MatchStats.load(tmp_path / "missing.npz")


def test_several_seeds_compare_seed_means():
    """Three training seeds per model, scored on the same images: Δ is the difference of the seed means,
    and resampling the seeds too widens the interval over a comparison of one seed each."""
    rows = simulated_images(np.random.default_rng(7), 150, (0.8, 0.75, 0.85, 0.8, 0.7, 0.78))
    runs = [MatchStats.from_val(r) for r in rows]
    base, other = runs[:3], runs[3:]
    d = compare(base, other, n_boot=300)["mAP50"]
    assert d.delta == pytest.approx(mean_map(other)[0] - mean_map(base)[0], abs=1e-12)
    one = compare(base[:1], other[:1], n_boot=300)["mAP50"]
    assert d.high - d.low > one.high - one.low
    same = compare(base, base[::-1], n_boot=300)["mAP50"]  # the same runs in another order
    assert same.delta == pytest.approx(0.0, abs=1e-12) and same.verdict == "no detectable difference"


def test_coverage_of_a_known_difference():
    """The 95% interval covers the true difference in at least 90% of 200 simulated val sets of 100 images.
    The truth is the difference on 20000 images drawn the same way."""
    rng = np.random.default_rng(1)

    def draw(n: int) -> tuple[MatchStats, MatchStats]:
        a, b = simulated_images(rng, n, (0.85, 0.75), n_cls=1)
        return MatchStats.from_val(a), MatchStats.from_val(b)

    big_a, big_b = draw(20000)
    truth = np.subtract(mean_map([big_b]), mean_map([big_a]))
    hits = np.zeros(2)
    for k in range(200):
        a, b = draw(100)
        d = compare([a], [b], n_boot=100, seed=k)
        hits += [d[m].low <= truth[i] <= d[m].high for i, m in enumerate(("mAP50", "mAP50-95"))]
    assert (hits / 200 >= 0.90).all(), hits / 200


def test_too_few_labelled_images_is_not_measurable():
    """One labelled val image (or none): resampling it changes nothing, so no verdict either way."""
    rows = simulated_images(np.random.default_rng(3), 1, (0.9, 0.2))
    empty = [(f"bg{i}.jpg", np.zeros((0, 10), bool), np.zeros(0, np.float32), np.zeros(0), np.zeros(0)) for i in range(5)]
    a, b = (MatchStats.from_val(r + empty) for r in rows)
    d = compare([a], [b], n_boot=300)
    assert d["mAP50"].verdict == "not measurable (1 labelled val image(s))" == d["mAP50-95"].describe()
    assert Difference("mAP50", 0.1, 0.05, 0.2, 0.01, 0.03, labelled_images=0).verdict.startswith("not measurable")


def test_a_verdict_whose_interval_rounds_to_zero_says_so():
    d = Difference("mAP50-95", 0.01, 0.0004, 0.02, 0.005, 0.014)
    assert d.interval() == "[+0.000, +0.020]" and d.describe_rounded() == "better (interval edge +4.0e-04)"
    assert Difference("mAP50", -0.01, -0.02, -0.004, 0.004, 0.011).describe_rounded() == "worse"


def _seed_noise_draw(rng: np.random.Generator, n_models: int, sd: float = 0.15) -> list[MatchStats]:
    """`n_models` training runs of one config on one val set of 80 images: each run's recall is
    0.75 plus its own seed luck (normal, `sd`), which here outweighs the choice of images."""
    recalls = tuple(float(np.clip(0.75 + sd * rng.standard_normal(), 0.3, 0.97)) for _ in range(n_models))
    return [MatchStats.from_val(r) for r in simulated_images(rng, 80, recalls, n_cls=1)]


def test_a_single_seed_beside_a_multi_seed_baseline_is_not_called_different_by_its_seed_luck():
    """A config with one seed, drawn from the same distribution as a 3-seed baseline: its seed luck is
    not in its own runs, so the interval borrows the baseline's seed spread (pooled sd, t with 2 df).
    Called better in at most 5% of 200 draws, and worse in at most 5% (measured: 3 and 3). Taking the
    single seed as it is, with only the baseline's seeds resampled (the rule before), called 20 of the
    200 better and 18 worse."""
    rng = np.random.default_rng(11)
    calls = {"better": 0, "worse": 0}
    for k in range(200):
        runs = _seed_noise_draw(rng, 4)
        d = compare(runs[:3], runs[3:], n_boot=200, seed=k)["mAP50-95"]
        assert d.seed_df == 2 and d.seed_sd > 0
        calls[d.verdict] = calls.get(d.verdict, 0) + 1
    assert calls["better"] <= 10 and calls["worse"] <= 10, calls


def test_seed_spread_is_pooled_over_every_model_with_two_seeds_or_more():
    full = [np.array([[0.5, 0.3], [0.6, 0.4], [0.7, 0.5]]), np.array([[0.4, 0.2]]), np.array([[0.1, 0.1], [0.3, 0.1]])]
    sd, df = seed_spread(full)
    assert df == 3  # 2 + 0 + 1
    np.testing.assert_allclose(sd, np.sqrt([(0.01 + 0 + 0.01 + 0.02) / 3, (0.01 + 0 + 0.01 + 0) / 3]))
    assert seed_spread([np.array([[0.5, 0.3]])] * 2)[1] == 0  # one seed each: the interval is images only
    one = compare(*(lambda r: ([r[0]], [r[1]]))(_seed_noise_draw(np.random.default_rng(2), 2)), n_boot=100)
    assert one["mAP50"].seed_df == 0 and one["mAP50"].seed_sd == 0.0


def test_a_rows_interval_depends_on_neither_the_order_nor_the_other_rows():
    """Each config against the baseline alone: adding an unstable row, or listing the rows in another
    order, leaves every other row's interval exactly as it was (the seed spread is pooled per pair)."""
    recalls = (0.75, 0.7, 0.8, 0.78, 0.95, 0.4, 0.6)  # baseline 3 seeds, x 1 seed, y 3 seeds far apart
    runs = [MatchStats.from_val(r) for r in simulated_images(np.random.default_rng(5), 80, recalls, n_cls=1)]
    base, x, y = runs[:3], runs[3:4], runs[4:]
    alone = compare(base, x, n_boot=200, seed=3)
    assert compare_many(base, {"x": x, "y": y}, n_boot=200, seed=3)["x"] == alone
    assert compare_many(base, {"y": y, "x": x}, n_boot=200, seed=3)["x"] == alone
    assert alone["mAP50"].seed_df == 2  # the baseline's 3 seeds, not y's


def test_pairing_refuses_repeated_images_and_other_labels(two_models):
    a, b = two_models
    with pytest.raises(ValueError, match="im0.jpg appears more than once"):
        compare([MatchStats.from_val(a + a[:1])], [MatchStats.from_val(b + b[:1])], n_boot=50)
    relabelled = [(*r[:4], np.append(r[4], 0)) if i == 3 else r for i, r in enumerate(b)]  # one more label on im3
    with pytest.raises(ValueError, match="different labels"):
        compare([MatchStats.from_val(a)], [MatchStats.from_val(relabelled)], n_boot=50)


def test_too_few_resamples_for_the_level_are_refused(two_models):
    sa, sb = (MatchStats.from_val(r) for r in two_models)
    with pytest.raises(ValueError, match="n_boot >= 40"):
        compare([sa], [sb], n_boot=39)
    assert compare([sa], [sb], n_boot=40)["mAP50"].verdict == "worse"


def test_intervals_stay_inside_the_possible_range_and_identical_runs_say_so():
    """Two seeds beside one (1 df): the interval is wide but never outside [-1, 1]; a model against
    itself is not "detectable to ±0.000"."""
    runs = _seed_noise_draw(np.random.default_rng(4), 3, 0.3)
    d = compare(runs[:2], runs[2:], n_boot=200, level=0.99)
    assert all(-1 <= v[k] <= 1 for v in (d["mAP50"].__dict__, d["mAP50-95"].__dict__) for k in ("low", "high"))
    same = compare(runs[:1], runs[:1], n_boot=50)["mAP50"]
    assert same.describe() == "no detectable difference (identical on every resample)"
