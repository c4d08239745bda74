"""The README's performance tables are rendered from the committed benchmark JSON, and agree with it."""

import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import results  # noqa: E402


def test_the_readme_matches_the_committed_results():
    assert results.check() == []


def test_a_changed_figure_is_caught(tmp_path):
    folder = tmp_path / "results"
    results.save("demo", {"n": 1}, {"rate": 2.0}, {"t": {"columns": ["measure", "images/s"], "rows": [["a", "2.0"]]}},
                 folder=folder)
    readme = tmp_path / "README.md"
    rendered, problems = results.render("x\n<!-- results: demo/t -->\nstale\n<!-- /results -->\ny\n", folder)
    assert problems == [] and "| a | 2.0 |" in rendered
    readme.write_text(rendered)
    assert results.check(readme, folder) == []
    record = json.loads((folder / "demo.json").read_text())
    record["tables"]["t"]["rows"][0][1] = "3.0"
    (folder / "demo.json").write_text(json.dumps(record))
    assert any("differs" in p for p in results.check(readme, folder))
    readme.write_text("<!-- results: missing/t -->\n<!-- /results -->\n")
    assert any("no such table" in p for p in results.check(readme, folder))
