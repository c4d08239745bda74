"""The docs' performance tables are rendered from the committed benchmark JSON, and agree with it."""

import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import results  # noqa: E402


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
