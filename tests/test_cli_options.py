"""What the commands share: progress that stays a few lines where stderr is not a terminal, and
the library's warnings as single lines."""

import logging

from click.testing import CliRunner
from conftest import photo

from lookalike.cli import main
from lookalike.cli.options import SparseProgress, progressbar, warning_lines


def test_progress_off_a_terminal_is_a_line_a_quarter_whatever_the_label_does(capsys):
    bar = progressbar(100, "Indexing")
    assert isinstance(bar, SparseProgress)  # pytest's stderr is no terminal
    with bar:
        for i in range(100):
            bar.label = f"Indexing ({i + 1.5:.1f} images/s)"  # what `index` does on every batch
            bar.update(1)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(": ", 1)[1].split(" (")[0] for line in lines] == ["25/100", "50/100", "75/100", "100/100"]
    assert all(line.startswith("Indexing (") and "%" in line for line in lines)


def test_progress_ends_with_the_last_count_and_prints_at_least_every_minute(capsys, monkeypatch):
    clock = iter([0.0, 61.0, 61.0, 61.5, 62.0])  # start; first update, its line; second update; the end
    monkeypatch.setattr("lookalike.cli.options.time.monotonic", lambda: next(clock))
    with SparseProgress(1000, "Embedding") as bar:
        bar.update(1)  # a minute passed: one line although no quarter was reached
        bar.update(1)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == ["Embedding: 1/1000", "Embedding: 2/1000"]


def test_index_in_a_pipe_prints_a_few_lines_not_one_per_batch(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(12):
        photo("coffee").resize((64 + i, 48)).save(folder / f"{i:02}.jpg")
    result = CliRunner().invoke(main, ["index", str(folder), "--batch-size", "1", "--workers", "0"])
    assert result.exit_code == 0, result.output
    progress = [line for line in result.stderr.splitlines() if line.startswith("Indexing")]
    assert 1 <= len(progress) <= 5 and progress[-1].split(": ")[1].startswith("12/12")
    assert "12 added" in result.stdout


def test_a_library_warning_is_one_line_on_stderr(capsys):
    with warning_lines():
        logging.getLogger("lookalike.featurize.extractor").warning("%s runs on torch", "tiny")
        logging.getLogger("lookalike.featurize.extractor").warning("first\n  second")
        logging.getLogger("lookalike.featurize.extractor").info("not shown")
        logging.getLogger("lookalike.featurize.runtimes.onnx_export").info("exporting tiny to ONNX (once)")  # why it pauses
        logging.getLogger("lookalike.ann.progress").info("adding: 3/10 rows in 6 s, about 14 s left")  # a long build
    assert capsys.readouterr().err.splitlines() == [
        "warning: tiny runs on torch", "warning: first second", "exporting tiny to ONNX (once)",
        "adding: 3/10 rows in 6 s, about 14 s left"]
    logging.getLogger("lookalike.featurize.runtimes.onnx_export").info("outside a command: not shown")
    assert capsys.readouterr().err == ""
