"""The docs' tables and prose figures are rendered from the committed benchmark JSON and agree with it; results
are saved only from a clean tree; the benchmarks' statistics (paired ratios, bootstrap intervals, targets)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import results  # noqa: E402
import stats  # noqa: E402

DEMO_LAYOUT = '''
import stats

def tables(figures, settings):
    return {"t": {"columns": ["measure", "images/s", "ratio"],
                  "rows": [["a", f"{figures['rate']:.1f}", stats.shown(figures["ratio"], ".2f")]]}}
'''


@pytest.fixture
def demo(tmp_path, monkeypatch):
    """A results folder holding demo.json, saved from a clean git repo, with its layout module importable."""
    (tmp_path / "layouts").mkdir()
    (tmp_path / "layouts" / "demo_layout.py").write_text(DEMO_LAYOUT)
    monkeypatch.syspath_prepend(str(tmp_path / "layouts"))
    repo = git_repo(tmp_path / "repo")
    folder = tmp_path / "results"
    ratio = stats.paired_ratio([2.0, 2.2, 1.8, 2.0, 2.1], [1.0, 1.0, 1.0, 1.0, 1.0])
    results.save("demo", {"n": 1}, {"rate": 2.0, "ratio": ratio, "runs": [{"s": 0.5}]}, "demo_layout", folder, repo=repo)
    return folder


def git_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    for command in (["init", "-q"], ["config", "user.email", "t@example.com"], ["config", "user.name", "t"]):
        subprocess.run(["git", *command], cwd=path, check=True)
    (path / "code.py").write_text("x = 1\n")
    (path / "benchmarks" / "results").mkdir(parents=True)
    (path / "benchmarks" / "results" / "old.json").write_text("{}\n")
    subprocess.run(["git", "add", "-A"], cwd=path, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "start"], cwd=path, check=True)
    return path


# The committed results and the docs


def test_every_page_matches_the_committed_results():
    assert results.PERFORMANCE == BENCHMARKS.parent / "docs" / "performance.md"
    assert results.pages()[0] == results.PERFORMANCE
    assert len(list(results.BLOCK.finditer(results.PERFORMANCE.read_text()))) >= 10
    assert results.check() == []
    assert not results.BLOCK.search((BENCHMARKS.parent / "README.md").read_text())  # the tables live in docs/


def test_the_docs_quote_measured_figures_only_through_markers_that_resolve():
    figures = [(page.name, m) for page in results.pages() for m in results.FIGURE.finditer(page.read_text())]
    assert len(figures) >= 20
    assert {"performance.md", "serve.md", "finetune.md", "scale.md"} <= {page for page, _ in figures}
    for page, match in figures:
        record = json.loads((results.RESULTS / f"{match['key']}.json").read_text())
        assert match["body"] == format(results.figure(record, match["path"]), match["format"] or ""), (page, match[0])


def test_every_committed_result_renders_its_tables_from_its_figures(tmp_path):
    for path in sorted(results.RESULTS.glob("*.json")):
        record = json.loads(path.read_text())
        assert "tables" not in record, path.name  # nothing stored to drift from the figures
        assert record["layout"] and isinstance(record["dirty"], bool) and not record["commit"].endswith("-dirty")
        assert results.tables(record), path.name
    # a figure changed in a copy of search.json changes the table the docs render
    record = json.loads((results.RESULTS / "search.json").read_text())
    page = "<!-- results: search/search -->\n<!-- /results -->\n"
    before, problems = results.render(page)
    assert problems == [] and f"| {record['figures']['search']['ratio']['median']:.2f} (" in before
    record["figures"]["search"]["ratio"]["median"] = 7.77
    (tmp_path / "search.json").write_text(json.dumps(record))
    after, problems = results.render(page, tmp_path)
    assert problems == [] and "| 7.77 (" in after


def test_search_reports_the_median_of_paired_ratios_not_the_ratio_of_medians():
    search = json.loads((results.RESULTS / "search.json").read_text())["figures"]["search"]
    ours, raw = search["lookalike_s"]["repeats"], search["raw_s"]["repeats"]
    assert search["ratio"] == stats.paired_ratio(ours, raw)  # each repeat's own ratio, then their median
    of_medians = stats.median_interval(ours)["median"] / stats.median_interval(raw)["median"]
    assert abs(search["ratio"]["median"] - of_medians) > 0.01  # and here that is not the ratio of the medians
    assert search["met"] == stats.meets(search["target"]["at_most"], search["ratio"], "lower")


# Rendering


def test_a_changed_figure_is_caught_in_tables_and_prose(demo, tmp_path):
    text = ("x\n<!-- results: demo/t -->\nstale\n<!-- /results -->\n"
            "it ran at <!-- figure: demo/rate:.1f -->9.9<!-- /figure --> images/s, "
            "<!-- figure: demo/ratio.median:.2f -->0<!-- /figure -->x, in <!-- figure: demo/runs.0.s -->?<!-- /figure --> s\n")
    rendered, problems = results.render(text, demo)
    assert problems == []
    assert "| a | 2.0 | 2.00 (1.80–2.20) |" in rendered
    assert "at <!-- figure: demo/rate:.1f -->2.0<!-- /figure --> images/s" in rendered
    assert "<!-- figure: demo/ratio.median:.2f -->2.00<!-- /figure -->x" in rendered
    assert "<!-- figure: demo/runs.0.s -->0.5<!-- /figure --> s" in rendered
    assert "<sub>demo, " in rendered and ", commit " in rendered
    page = tmp_path / "page.md"
    page.write_text(rendered)
    assert results.check(page, demo) == []
    record = json.loads((demo / "demo.json").read_text())
    record["figures"]["rate"] = 3.0
    (demo / "demo.json").write_text(json.dumps(record))
    problems = results.check(page, demo)
    assert any("demo/t: the table differs" in p for p in problems)
    assert any("demo/rate: the figure differs" in p for p in problems)
    assert not any("ratio" in p for p in problems)
    assert results.write(page, demo) == [] and "| a | 3.0 |" in page.read_text()
    assert "-->3.0<!-- /figure --> images/s" in page.read_text()
    assert results.check(page, demo) == []


def test_the_renderer_refuses_a_figure_or_table_that_does_not_exist(demo, tmp_path):
    for text, expected in (("<!-- figure: demo/rate.nope:.1f -->2.0<!-- /figure -->", "demo/rate.nope: no such figure"),
                           ("<!-- figure: demo/runs.3.s -->1<!-- /figure -->", "demo/runs.3.s: no such figure"),
                           ("<!-- figure: missing/rate -->1<!-- /figure -->", "missing/rate: no such figure"),
                           ("<!-- results: demo/nope -->\n<!-- /results -->\n", "demo/nope: no such table"),
                           ("<!-- results: missing/t -->\n<!-- /results -->\n", "missing/t: no such table")):
        rendered, problems = results.render(text, demo)
        assert rendered == text and len(problems) == 1 and problems[0].startswith(expected), problems
        page = tmp_path / "page.md"
        page.write_text(text)
        assert any(expected in p for p in results.check(page, demo))
        assert any(expected in p for p in results.write(page, demo)) and page.read_text() == text


def test_results_check_exits_non_zero_on_a_stale_figure(demo, tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- figure: demo/rate:.1f -->9.9<!-- /figure -->\n")
    command = [sys.executable, str(BENCHMARKS / "results.py"), "--check", "--results", str(demo), str(page)]
    env = {**os.environ, "PYTHONPATH": str(demo.parent / "layouts")}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    assert done.returncode == 1 and "demo/rate: the figure differs" in done.stderr
    page.write_text("<!-- figure: demo/rate:.1f -->2.0<!-- /figure -->\n")
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr


# Saving from a clean tree


def test_save_refuses_a_dirty_tree_unless_told_and_then_records_it(tmp_path, monkeypatch):
    (tmp_path / "layouts").mkdir()
    (tmp_path / "layouts" / "demo_layout.py").write_text(DEMO_LAYOUT)
    monkeypatch.syspath_prepend(str(tmp_path / "layouts"))
    monkeypatch.setattr(results.tempfile, "tempdir", str(tmp_path))  # where a refused run is kept
    repo, folder = git_repo(tmp_path / "repo"), tmp_path / "results"
    figures = {"rate": 2.0, "ratio": stats.point(1.0)}
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()

    clean = json.loads(results.save("demo", {}, figures, "demo_layout", folder, repo=repo).read_text())
    assert clean["commit"] == head and clean["dirty"] is False and "diff_stat" not in clean
    (repo / "benchmarks" / "results" / "old.json").write_text('{"new": 1}\n')  # a result is not code
    assert results.save("demo", {}, figures, "demo_layout", folder, repo=repo)
    (folder / "demo.json").unlink()

    (repo / "code.py").write_text("x = 2\n")
    with pytest.raises(SystemExit) as refused:
        results.save("demo", {}, figures, "demo_layout", folder, repo=repo)
    message = str(refused.value)
    assert "\n" not in message and "uncommitted changes" in message and "--dirty" in message
    assert not (folder / "demo.json").exists()
    kept = Path(message.rsplit("kept in ", 1)[1].rstrip(")"))
    assert json.loads(kept.read_text())["figures"]["rate"] == 2.0  # the run is not lost

    dirty = json.loads(results.save("demo", {}, figures, "demo_layout", folder, dirty=True, repo=repo).read_text())
    assert dirty["commit"] == head and dirty["dirty"] is True and "code.py" in dirty["diff_stat"]

    with pytest.raises(SystemExit, match="not a git checkout"):
        results.check_tree(False, tmp_path / "layouts")


def test_a_benchmark_refuses_a_dirty_tree_in_one_line_with_exit_1(tmp_path):
    repo = git_repo(tmp_path / "repo")
    (repo / "code.py").write_text("x = 3\n")
    code = f"import results; results.check_tree(False, __import__('pathlib').Path({str(repo)!r}))"
    done = subprocess.run([sys.executable, "-c", code], cwd=BENCHMARKS, capture_output=True, text=True)
    assert done.returncode == 1 and done.stdout == "" and len(done.stderr.strip().splitlines()) == 1
    assert "refusing to save results from a tree with uncommitted changes" in done.stderr


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
