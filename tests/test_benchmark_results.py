"""The docs' performance tables are rendered from the committed benchmark JSON, and agree with it; the benchmarks'
statistics (paired ratios, bootstrap intervals, targets)."""

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import results  # noqa: E402
import stats  # noqa: E402


def test_docs_performance_holds_the_tables_and_matches_the_committed_results():
    assert results.PERFORMANCE == BENCHMARKS.parent / "docs" / "performance.md"
    assert results.pages()[0] == results.PERFORMANCE
    assert len(list(results.BLOCK.finditer(results.PERFORMANCE.read_text()))) >= 10
    assert results.check(results.PERFORMANCE) == []


def test_every_page_matches_the_committed_results():
    assert results.check() == []
    assert not results.BLOCK.search((BENCHMARKS.parent / "README.md").read_text())  # the tables moved to docs/


def test_a_changed_figure_is_caught(tmp_path):
    folder = tmp_path / "results"
    results.save("demo", {"n": 1}, {"rate": 2.0}, {"t": {"columns": ["measure", "images/s"], "rows": [["a", "2.0"]]}},
                 folder=folder)
    page = tmp_path / "performance.md"
    rendered, problems = results.render("x\n<!-- results: demo/t -->\nstale\n<!-- /results -->\ny\n", folder)
    assert problems == [] and "| a | 2.0 |" in rendered
    page.write_text(rendered)
    assert results.check(page, folder) == []
    record = json.loads((folder / "demo.json").read_text())
    record["tables"]["t"]["rows"][0][1] = "3.0"
    (folder / "demo.json").write_text(json.dumps(record))
    assert any("differs" in p for p in results.check(page, folder))
    assert results.write(page, folder) == [] and "| a | 3.0 |" in page.read_text()
    assert results.check(page, folder) == []
    page.write_text("<!-- results: missing/t -->\n<!-- /results -->\n")
    assert any("no such table" in p for p in results.check(page, folder))


# Statistics


def test_paired_ratio_of_constant_ratios_is_exact():
    found = stats.paired_ratio([2.0, 4.0, 6.0, 8.0, 10.0], [1.0, 2.0, 3.0, 4.0, 5.0])
    assert found == {"median": 2.0, "low": 2.0, "high": 2.0, "n": 5, "repeats": [2.0] * 5}


def test_the_median_of_paired_ratios_is_not_the_ratio_of_medians():
    a, b = [1.0, 2.0, 3.0, 4.0, 5.0], [5.0, 1.0, 2.0, 3.0, 4.0]
    assert stats.median_interval(a)["median"] / stats.median_interval(b)["median"] == 1.0
    found = stats.paired_ratio(a, b)  # ratios 0.2, 2, 1.5, 1.333, 1.25
    assert found["median"] == pytest.approx(4 / 3)
    assert found["low"] == pytest.approx(0.2) and found["high"] == pytest.approx(2.0)  # 5 repeats: the range


def test_bootstrap_interval_of_the_median_by_hand():
    # n = 5: a resample's median is the least value with probability P(Binomial(5, 1/5) >= 3) = 0.058 > 0.025,
    # so the interval is the whole range
    assert stats.median_interval([5, 1, 4, 2, 3]) | {"repeats": None} == \
        {"median": 3.0, "low": 1.0, "high": 5.0, "n": 5, "repeats": None}
    # n = 7: P(median = min) = P(Binomial(7, 1/7) >= 4) = 0.010 < 0.025 but P(median <= 2nd) = P(Binomial(7, 2/7) >= 4)
    # = 0.085: the interval runs from the 2nd value to the 6th
    found = stats.median_interval([10, 20, 30, 40, 50, 60, 70])
    assert (found["median"], found["low"], found["high"]) == (40.0, 20.0, 60.0)
    # the same repeats give the same interval (a seeded bootstrap), in any order
    assert stats.median_interval([70, 10, 60, 20, 50, 30, 40]) | {"repeats": None} == found | {"repeats": None}


def test_too_few_repeats_give_no_interval_and_meet_no_target():
    found = stats.paired_ratio([1.0, 1.0, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0])
    assert found["median"] == 0.5 and found["low"] is None and found["high"] is None and found["n"] == 4
    assert not stats.meets(1.0, found, "lower")
    assert stats.shown(found) == "0.50 (4 repeats, no interval)"
    assert not stats.meets(1.0, stats.point(0.5), "lower") and stats.shown(stats.point(0.5)) == "0.50"


def test_a_target_is_met_only_by_the_intervals_worse_end():
    interval = {"median": 1.0, "low": 0.9, "high": 1.2}
    assert not stats.meets(1.1, interval, "lower")  # the median meets it, the high end does not
    assert stats.meets(1.2, interval, "lower") and stats.meets(1.3, (0.9, 1.2), "lower")
    assert not stats.meets(0.95, interval, "higher") and stats.meets(0.9, interval, "higher")
    with pytest.raises(ValueError, match="better"):
        stats.meets(1.0, interval, "smaller")


def test_paired_ratio_refuses_unpaired_or_non_positive_repeats():
    with pytest.raises(ValueError, match="as many"):
        stats.paired_ratio([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="positive"):
        stats.paired_ratio([1.0, 0.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="no values"):
        stats.median_interval([])


def test_interleave_runs_each_side_by_side_alternating_which_goes_first():
    calls = []
    times = stats.interleave({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # a warm-up round, then a-b, b-a, a-b
    assert [len(t) for t in times.values()] == [3, 3] and all(s >= 0 for t in times.values() for s in t)


def test_shown_formats_a_figure_with_its_interval():
    assert stats.shown({"median": 1.134, "low": 0.9, "high": 1.25, "n": 5}, ".2f", "x") == "1.13x (0.90–1.25)"
    assert stats.shown(2.5, ".1f", " s") == "2.5 s"
    assert stats.verdict(True, {"low": 1.0}) == "met" and stats.verdict(False, {"low": 1.0}) == "**missed**"
    assert stats.verdict(True, {"low": None, "n": 3}).startswith("not judged")
