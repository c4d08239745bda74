"""`lookalike serve` from the command line: a true subprocess that prints its URL, opens a browser and stops on Ctrl-C;
one-line errors for a missing extra, a taken port and a bad classifier; a warning off localhost."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from click.testing import CliRunner
from serve_helpers import photo_folder

from lookalike.cli import main
from lookalike.serve.server import Server


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return photo_folder(tmp_path_factory) / ".lookalike"


def _serve(*args):
    return CliRunner().invoke(main, ["serve", *map(str, args)])


@pytest.mark.slow
def test_serve_prints_its_url_opens_a_browser_and_stops_cleanly_on_ctrl_c(store, tmp_path):
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.py"  # $BROWSER is what Python's webbrowser runs: record the URL it is given
    browser.write_text(f"import sys, pathlib\npathlib.Path({str(opened)!r}).write_text(sys.argv[1])\n")
    env = {**os.environ, "BROWSER": f"{sys.executable} {browser} %s"}
    process = subprocess.Popen([sys.executable, "-m", "lookalike", "serve", "--store", str(store), "--port", "0", "--open"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=store.parent)
    try:
        line = process.stdout.readline()  # blocks until the server prints; the test timeout bounds it
        assert line.startswith(f"Serving {store} (7 images) at http://127.0.0.1:"), line
        url = line.split(" at ")[1].split()[0]
        info = httpx.get(url + "api/info", timeout=30).json()
        assert info["embedded"] == 7
        deadline = time.monotonic() + 30
        while not opened.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert opened.read_text() == url
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err  # Ctrl-C ends serve as it ends every command; only reads were cut short
    assert "stopped" in err and "Traceback" not in err + out
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "api/info", timeout=5)


def test_without_the_serve_extra_it_is_one_line_naming_the_install(store, monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # what a missing package looks like to import
    result = _serve("--store", store)
    assert result.exit_code == 1
    assert result.stderr == "Error: `lookalike serve` needs FastAPI, part of the serve extra: pip install 'lookalike[serve]'\n"


@pytest.fixture
def no_serving(monkeypatch):
    """Everything up to the blocking run, which returns at once: the output before serving is what is tested."""
    ran = []
    monkeypatch.setattr(Server, "run", lambda self: ran.append(self.url))
    return ran


def test_another_host_warns_that_the_network_can_see_the_images(store, no_serving):
    result = _serve("--store", store, "--host", "0.0.0.0", "--port", "0")
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("warning: listening on 0.0.0.0: anyone who can reach this machine")
    assert f"Serving {store} (7 images) at http://0.0.0.0:" in result.stdout and no_serving
    local = _serve("--store", store, "--port", "0")
    assert "warning" not in local.stderr and "http://127.0.0.1:" in local.stdout


def test_the_store_is_found_upward_as_other_commands_find_it(store, no_serving, monkeypatch):
    monkeypatch.delenv("LOOKALIKE_STORE", raising=False)
    monkeypatch.chdir(store.parent / "sub")
    result = _serve("--port", "0")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Serving {store} (7 images) at http://127.0.0.1:")


def test_serve_asks_openmp_for_passive_waits_before_faiss_runs(store, monkeypatch):
    """A lone query's scan goes to FAISS's OpenMP team only where its threads sleep while they wait (ann.index)."""
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    seen = []
    monkeypatch.setattr(Server, "run", lambda self: seen.append(os.environ.get("OMP_WAIT_POLICY")))
    assert _serve("--store", store, "--port", "0").exit_code == 0 and seen == ["PASSIVE"]
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # a user's own choice stays
    assert _serve("--store", store, "--port", "0").exit_code == 0 and seen == ["PASSIVE", "ACTIVE"]
    loaded = "import sys, lookalike.cli.serve; print('faiss' in sys.modules)"  # set before FAISS's OpenMP starts
    assert subprocess.run([sys.executable, "-c", loaded], capture_output=True, text=True).stdout.strip() == "False"


def test_a_taken_port_is_one_line(store, no_serving):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = _serve("--store", store, "--port", taken.getsockname()[1])
    assert result.exit_code == 1 and not no_serving
    assert result.stderr.startswith("Error: cannot listen on 127.0.0.1:") and "choose another --port" in result.stderr
    assert result.stderr.count("\n") == 1


def test_a_bad_classifier_or_no_store_is_one_line(store, tmp_path, no_serving, monkeypatch):
    (tmp_path / "model.skops").write_bytes(b"\x80\x04 a pickle")
    result = _serve("--store", store, "--classifier", tmp_path / "model.skops")
    assert result.exit_code == 1 and "never loads pickles" in result.stderr and result.stderr.count("\n") == 1
    monkeypatch.delenv("LOOKALIKE_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    result = _serve("--port", "0")
    assert result.exit_code == 1 and "no lookalike store" in result.stderr and not no_serving


def test_help_explains_the_command():
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--store", "--host", "--port", "--classifier", "--open", "--max-upload-mb", "--allow-actions", "--api-docs"):
        assert option in result.output
