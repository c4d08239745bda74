"""The duplicate commands as a user runs them: groups as JSON, CSV and HTML, the plan, asking, acting, undo and
verdicts; real photos where the facts come from indexing; bad input as one line."""

import csv
import io
import json
import os
import shutil

import pytest
from click.testing import CliRunner
from conftest import photo
from test_actions import library

from lookalike.cli import main
from lookalike.featurize.options import EmbedOptions
from lookalike.indexing import index_folder, open_store


def cli(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def test_groups_as_json_csv_and_html(tmp_path):
    library(tmp_path / "photos", n_groups=1)
    result = cli("dupes", "--store", tmp_path / "photos", "--json")
    assert result.exit_code == 0, result.output
    (group,) = json.loads(result.stdout)["groups"]
    assert group["kind"] == "near" and group["keeper"].endswith("orig/0.jpg")
    assert set(group["members"][0]) == {"id", "path", "score_to_keeper", "keep", "reason", "size", "width", "height",
                                        "mtime", "missing"}
    assert [m["keep"] for m in group["members"]] == [True, False, False, False]
    rows = list(csv.DictReader(io.StringIO(cli("dupes", "--store", tmp_path / "photos", "--csv").stdout)))
    assert len(rows) == 4 and rows[0]["keeper"] == group["keeper"] and rows[1]["reason"].startswith("proposed: ")
    assert cli("dupes", "--store", tmp_path / "photos", "--html", tmp_path / "s.html").exit_code == 0
    sheet = (tmp_path / "s.html").read_text()
    assert sheet.count('class="badge keeper">KEEP') == 1 and sheet.count('class="badge proposed">MOVE') == 3


def test_the_plan_is_printed_asked_for_and_needs_yes_off_a_terminal(tmp_path):
    library(tmp_path / "photos", n_groups=1)
    args = ["dupes", "--store", tmp_path / "photos", "--move-to", tmp_path / "q"]
    dry = cli(*args, "--dry-run")
    moves = [line.split(" -> ") for line in dry.stdout.splitlines() if line.startswith("plan: ")]
    assert dry.exit_code == 0 and len(moves) == 3
    assert all(source.endswith(dest.split("/q/")[1]) for source, dest in moves)
    assert "plan: move 3 files" in dry.stderr and not (tmp_path / "q").exists()
    refused = cli(*args)  # CliRunner's stdin is no terminal
    assert refused.exit_code == 1 and "refusing to move files without --yes" in refused.stderr
    assert not (tmp_path / "q").exists()
    done = cli(*args, "--yes")
    assert done.exit_code == 0 and "moved 3 files" in done.stdout and len(list((tmp_path / "q").rglob("*.jpg"))) == 3
    listed = cli("undo", "--list", "--store", tmp_path / "photos")
    assert "move" in listed.stdout and "3 files  done" in listed.stdout
    back = cli("undo", "--store", tmp_path / "photos")
    assert back.exit_code == 0 and "restored 3 files" in back.stdout and not list((tmp_path / "q").rglob("*.jpg"))
    again = cli("undo", "--store", tmp_path / "photos")
    assert again.exit_code == 1 and again.stderr.strip() == "Error: nothing to undo: no action on this store's files is left to undo"


@pytest.mark.parametrize("args, message", [
    (["--keep", "biggest"], "unknown keeper rule 'biggest'"),
    (["--move-to", "Q", "--trash"], "--move-to and --trash can't be used together"),
    (["--dry-run"], "--dry-run goes with --move-to DIR or --trash"),
    (["--move-to", "photos/orig/q", "--protect", "photos/orig"], "is inside the protected folder"),
])
def test_bad_input_is_one_line_and_moves_nothing(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    library(tmp_path / "photos", n_groups=1)
    before = sorted(p for p in (tmp_path / "photos").rglob("*.jpg"))
    result = cli("dupes", "--store", "photos", *args)
    assert result.exit_code in (1, 2) and message in result.stderr and "Traceback" not in result.output
    assert sorted(p for p in (tmp_path / "photos").rglob("*.jpg")) == before


def test_distinct_verdicts_through_the_command_line(tmp_path):
    library(tmp_path / "photos", n_groups=1)
    photos = tmp_path / "photos"
    said = cli("distinct", photos / "orig/0.jpg", photos / "near/0.jpg", "--store", photos)
    assert said.exit_code == 0 and "recorded 1 verdicts" in said.stdout
    (group,) = json.loads(cli("dupes", "--store", photos, "--json").stdout)["groups"]
    assert not any(m["path"].endswith("near/0.jpg") for m in group["members"])
    listed = cli("distinct", "--list", "--store", photos)
    assert "orig/0.jpg" in listed.stdout and "!=" in listed.stdout and "near/0.jpg" in listed.stdout
    assert cli("distinct", photos / "orig/0.jpg", photos / "near/0.jpg", "--forget", "--store", photos).exit_code == 0
    assert cli("distinct", "--list", "--store", photos).stdout == ""
    assert "not an image in the store" in cli("distinct", photos / "orig/0.jpg", tmp_path / "x.jpg", "--store", photos).stderr


def test_real_photos_indexed_say_exact_from_near_and_a_renamed_library_keeps_its_vectors(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("chelsea", "coffee", "astronaut"):
        photo(name).save(photos / f"{name}.jpg", quality=90)
    shutil.copy(photos / "chelsea.jpg", photos / "chelsea-copy.jpg")
    options = EmbedOptions(device="cpu", workers=0)
    index_folder(photos, options=options)
    (group,) = json.loads(cli("dupes", "--exact", "--store", photos, "--json").stdout)["groups"]
    assert group["kind"] == "exact" and {os.path.basename(m["path"]) for m in group["members"]} == {"chelsea.jpg", "chelsea-copy.jpg"}
    with open_store(photos).catalog() as catalog:
        before = {r.path: (r.id, r.row, r.digest) for r in catalog.records("ok")}
    (photos / "renamed").mkdir()
    for name in ("coffee.jpg", "astronaut.jpg"):
        os.rename(photos / name, photos / "renamed" / name)
    summary = index_folder(photos, options=options)
    assert (summary.moved, summary.added, summary.removed, summary.embedded) == (2, 0, 0, 0)
    with open_store(photos).catalog() as catalog:
        after = {r.path: (r.id, r.row, r.digest) for r in catalog.records("ok")}
    assert after["renamed/coffee.jpg"] == before["coffee.jpg"] and after["renamed/astronaut.jpg"] == before["astronaut.jpg"]
    assert open_store(photos).check().ok
