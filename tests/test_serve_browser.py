"""The page in a real headless Chromium (Debian's chromium-headless-shell, driven by Playwright).

A missing browser fails these tests: scripts/test installs it with apt. Never `playwright install`.
Each test leaves a screenshot in its tmp folder (screenshot.png), some more.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from conftest import photo
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect, sync_playwright
from serve_helpers import Counted, edited_chelsea, photo_folder, watched_app, working_directory

from lookalike.cli.options import shown
from lookalike.featurize.options import EmbedOptions
from lookalike.indexing import index_folder, open_store
from lookalike.serve import BackgroundServer, create_app
from lookalike.watch import Watcher

BROWSER = "/usr/lib/chromium/chromium-headless-shell"
expect.set_options(timeout=30_000)  # a first upload loads the model; a busy CI machine takes its time
# No machine these tests run on has a network; keep Chromium from trying (Playwright already turns most off).
OFFLINE = ["--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-domain-reliability", "--no-pings", "--disable-features=Translate,OptimizationHints,MediaRouter"]


@pytest.fixture(scope="module")
def server(tmp_path_factory, onnx_cache_dir):
    """The server, its model warm: a first upload then takes as long as any other."""
    with pytest.MonkeyPatch.context() as env:  # the session's ONNX cache, already while warming up (see conftest.no_network)
        env.setenv("LOOKALIKE_CACHE", str(onnx_cache_dir))
        folder = photo_folder(tmp_path_factory)
        with working_directory(folder), BackgroundServer(create_app(open_store(folder, device="cpu"), display_path=shown)) as server:
            deadline = time.monotonic() + 300
            while not httpx.get(server.url + "api/info").json()["warm"]["model"] and time.monotonic() < deadline:
                time.sleep(0.1)
            yield server


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=BROWSER, args=OFFLINE, timeout=60_000)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, tmp_path):
    context = browser.new_context(viewport={"width": 1100, "height": 720})
    page = context.new_page()
    page.set_default_timeout(30_000)
    crashes = []
    page.on("pageerror", lambda error: crashes.append(str(error)))
    yield page
    page.screenshot(path=tmp_path / "screenshot.png")
    context.close()
    assert crashes == [], crashes  # no uncaught JavaScript error on the way


def _results(page):
    return page.locator("#results .result")


def _all_thumbnails_loaded(page, images: str) -> None:
    page.wait_for_function(f"""() => {{
        const images = [...document.querySelectorAll({images!r})];
        return images.length > 0 && images.every((i) => i.complete && i.naturalWidth > 0 && i.alt);
    }}""")


def test_an_upload_finds_the_right_neighbour_first(page, server, tmp_path):
    page.goto(server.url)
    page.set_input_files("input[type=file]", edited_chelsea(tmp_path / "copy.jpg"))
    expect(_results(page).first).to_have_attribute("data-path", "chelsea.jpg")
    assert float(_results(page).first.get_attribute("data-score")) > 0.8
    scores = [float(s) for s in _results(page).evaluate_all("(rs) => rs.map((r) => r.dataset.score)")]
    assert len(scores) == 7 and scores == sorted(scores, reverse=True)
    expect(page.locator("#status")).to_contain_text("nearest images of copy.jpg")
    _all_thumbnails_loaded(page, "#results img")


def test_a_dropped_or_pasted_image_searches_too(page, server, tmp_path):
    image = base64.b64encode(edited_chelsea(tmp_path / "copy.jpg").read_bytes()).decode()
    make_files = """(b64) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const files = new DataTransfer();
        files.items.add(new File([bytes], "held.jpg", { type: "image/jpeg" }));
        return files;
    }"""
    page.goto(server.url)
    page.dispatch_event("#drop", "drop", {"dataTransfer": page.evaluate_handle(make_files, image)})
    expect(_results(page).first).to_have_attribute("data-path", "chelsea.jpg")
    expect(page.locator("#status")).to_contain_text("nearest images of held.jpg")
    page.goto(server.url + "?view=info")
    page.evaluate(f"""(b64) => document.dispatchEvent(new ClipboardEvent("paste",
        {{ clipboardData: ({make_files})(b64), bubbles: true }}))""", image)
    expect(_results(page).first).to_have_attribute("data-path", "chelsea.jpg")
    expect(page).to_have_url(re.compile(r"view=search"))


def test_a_click_shows_the_neighbours_of_the_result_and_the_url_can_be_shared(page, server, tmp_path):
    page.goto(server.url)
    page.set_input_files("input[type=file]", edited_chelsea(tmp_path / "copy.jpg"))
    expect(_results(page).first).to_have_attribute("data-path", "chelsea.jpg")
    chelsea = _results(page).first.get_attribute("data-id")
    _results(page).first.click()
    expect(page).to_have_url(re.compile(rf"\?id={chelsea}\b"))
    expected = [h["path"] for h in httpx.get(f"{server.url}api/similar/{chelsea}", params={"k": 12}).json()["hits"]]
    expect(_results(page)).to_have_count(len(expected))
    assert _results(page).evaluate_all("(rs) => rs.map((r) => r.dataset.path)") == expected
    expect(page.locator("#query-caption")).to_have_text("chelsea.jpg")
    _all_thumbnails_loaded(page, "#query img, #results img")

    second = _results(page).nth(1)  # by keyboard: a result takes focus, Enter follows it
    second_id = second.get_attribute("data-id")
    second.focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(rf"\?id={second_id}\b"))
    page.go_back()
    expect(page).to_have_url(re.compile(rf"\?id={chelsea}\b"))
    expect(_results(page).first).to_have_attribute("data-path", expected[0])

    shared = page.context.new_page()  # the same URL opened afresh shows the same view
    shared.goto(page.url)
    expect(shared.locator("#results .result")).to_have_count(len(expected))
    assert shared.locator("#results .result").evaluate_all("(rs) => rs.map((r) => r.dataset.path)") == expected


def test_the_duplicates_view_shows_the_near_duplicate_pair(page, server):
    page.goto(server.url)
    page.get_by_role("link", name="Duplicates").click()
    page.locator("#dupes-threshold").fill("0.8")
    page.get_by_role("button", name="Find duplicates").click()
    expect(page).to_have_url(re.compile(r"view=dupes&threshold=0\.8"))
    group = page.locator(".group")
    expect(group).to_have_count(1)
    paths = group.locator(".result").evaluate_all("(rs) => rs.map((r) => r.dataset.path)")
    assert sorted(paths) == ["rocket-copy.jpg", "rocket.png"]
    expect(group.locator(".result").first).to_contain_text("keep")  # the keeper comes first, as `lookalike dupes` shows
    expect(group.locator(".result").nth(1)).to_contain_text("to the keeper")
    expect(page.locator("#status")).to_contain_text("1 group of duplicates")
    _all_thumbnails_loaded(page, ".group img")


def test_a_bad_upload_shows_an_error_message_and_the_page_recovers(page, server, tmp_path):
    (tmp_path / "notes.jpg").write_text("this is not an image\n")
    page.goto(server.url)
    page.set_input_files("input[type=file]", tmp_path / "notes.jpg")
    error = page.get_by_role("alert")
    expect(error).to_be_visible()
    expect(error).to_contain_text("Could not search with notes.jpg: not a usable image: not an image")
    expect(_results(page)).to_have_count(0)
    expect(page.locator("#query")).to_be_hidden()
    page.screenshot(path=tmp_path / "error.png")
    page.set_input_files("input[type=file]", edited_chelsea(tmp_path / "copy.jpg"))
    expect(_results(page).first).to_have_attribute("data-path", "chelsea.jpg")
    expect(error).to_be_hidden()


def test_the_store_view_lists_info_and_failures(page, server):
    page.goto(server.url + "?view=info")
    expect(page.locator("#info")).to_contain_text("7 embedded, 1 failed")
    expect(page.locator("#failures tbody tr")).to_have_count(1)
    expect(page.locator("#failures")).to_contain_text("broken.jpg")
    page.goto(server.url + "?id=../../etc/passwd")
    expect(page.get_by_role("alert")).to_contain_text("is not an image id")


def test_back_before_a_clicked_results_answer_arrives_never_shows_that_answer(page, server, tmp_path):
    page.goto(server.url)
    page.set_input_files("input[type=file]", edited_chelsea(tmp_path / "copy.jpg"))
    expect(_results(page).first).to_have_attribute("data-path", "chelsea.jpg")
    upload_url = page.url
    held = []
    page.route("**/api/similar/**", lambda route: held.append(route))  # the clicked image's answer is held back until the test lets it go
    _results(page).first.click()
    expect(page).to_have_url(re.compile(r"\?id=\d+"))
    deadline = time.monotonic() + 30
    while not held and time.monotonic() < deadline:
        page.wait_for_timeout(20)
    assert len(held) == 1
    page.go_back()  # before the answer arrives
    expect(page).to_have_url(upload_url)
    expect(page.locator("#query-caption")).to_have_text("copy.jpg (uploaded)")  # the upload's own results again
    expect(_results(page).first).to_have_attribute("data-path", "chelsea.jpg")
    try:
        held[0].continue_()  # now the old answer may come: it was aborted, and must not be shown
    except PlaywrightError:
        pass
    page.wait_for_timeout(1500)
    assert page.url == upload_url
    expect(page.locator("#query-caption")).to_have_text("copy.jpg (uploaded)")
    expect(_results(page).first).to_have_attribute("data-path", "chelsea.jpg")
    expect(_results(page)).to_have_count(7)
    page.screenshot(path=tmp_path / "back.png")


ATTACK = """<!doctype html><title>another site</title>
<h1>A page on another site</h1>
<img src="{api}/api/dupes?threshold=0.5"><img src="{api}/api/dupes?threshold=0.51&k=50">
<img src="{api}/api/similar/{id}?k=1000"><img src="{api}/api/thumbs/{id}?size=999"><img src="{api}/api/images/{id}">
<iframe name="sink"></iframe>
<form id="act" method="POST" action="{api}/api/test/action" enctype="text/plain" target="sink"><input name="x" value="y"></form>
<script>
  const form = new FormData();
  form.append("image", new Blob([new Uint8Array([255, 216, 255])], {{ type: "image/jpeg" }}), "x.jpg");
  fetch("{api}/api/search", {{ method: "POST", mode: "no-cors", body: form }}).catch(() => {{}});
  document.getElementById("act").submit();
</script>"""


class _AttackPage(BaseHTTPRequestHandler):
    html = b""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(self.html)))
        self.end_headers()
        self.wfile.write(self.html)

    def log_message(self, *args):
        pass


def test_a_page_on_another_site_can_start_no_search_nor_change_anything(page, tmp_path_factory, tmp_path):
    folder = photo_folder(tmp_path_factory)
    with open_store(folder).catalog() as catalog:
        image_id = catalog.by_paths(["chelsea.jpg"])["chelsea.jpg"].id
    guard, searches, done = watched_app(folder)
    seen = Counted(guard)  # in front of the guard: what the browser sent, refused or not
    with working_directory(folder), BackgroundServer(seen) as api:
        _AttackPage.html = ATTACK.format(api=api.url.rstrip("/"), id=image_id).encode()
        other = ThreadingHTTPServer(("127.0.0.1", 0), _AttackPage)
        threading.Thread(target=other.serve_forever, daemon=True).start()
        try:
            page.goto(f"http://localhost:{other.server_address[1]}/")  # localhost is another site than 127.0.0.1
            wanted = {"/api/dupes", f"/api/similar/{image_id}", f"/api/thumbs/{image_id}", f"/api/images/{image_id}",
                      "/api/search", "/api/test/action"}
            deadline = time.monotonic() + 30
            while not wanted <= set(seen.paths) and time.monotonic() < deadline:
                page.wait_for_timeout(50)
            page.screenshot(path=tmp_path / "another-site.png")
        finally:
            other.shutdown()
        assert wanted <= set(seen.paths), seen.paths  # the browser did send them all
        assert {h.get("sec-fetch-site") for h in seen.headers} == {"cross-site"}
        assert guard.app.paths == [] and searches == [] and done == []  # and none got past the guard

        page.goto(api.url + f"?id={image_id}")  # the server's own page searches, and may act with its token
        expect(_results(page).first).to_be_visible()
        assert "similar" in searches
        assert page.evaluate("act('POST', '/api/test/action', { from: 'the page' })") == {"done": 1}
        assert done == [{"from": "the page"}]


@pytest.fixture
def library(tmp_path, onnx_cache_dir, monkeypatch):
    """A writable store: three photos, an exact copy of coffee, and a smaller re-save of rocket."""
    monkeypatch.setenv("LOOKALIKE_CACHE", str(onnx_cache_dir))
    folder = tmp_path / "library"
    folder.mkdir()
    for name in ("chelsea", "coffee", "rocket"):
        image = photo(name)
        image.thumbnail((400, 400))
        image.save(folder / f"{name}.jpg", quality=92)
    (folder / "coffee-copy.jpg").write_bytes((folder / "coffee.jpg").read_bytes())
    copy = photo("rocket")
    copy.thumbnail((300, 300))
    copy.save(folder / "rocket-small.jpg", quality=70)
    index_folder(folder, options=EmbedOptions(device="cpu", workers=0))
    return folder


def test_a_picked_keeper_is_kept_its_duplicate_moves_to_the_quarantine_and_undo_brings_it_back(page, library, tmp_path):
    quarantine = tmp_path / "quarantine"
    app = create_app(open_store(library, device="cpu"), display_path=shown, quarantine=quarantine, warm_up=False)
    with working_directory(library), BackgroundServer(app) as server:
        page.goto(server.url + "?view=dupes&threshold=0.8")
        groups = page.locator(".group")
        expect(groups).to_have_count(2)
        rocket = groups.filter(has=page.locator('[data-path="rocket-small.jpg"]'))
        expect(rocket.locator("li.keeper .result")).to_have_attribute("data-path", "rocket.jpg")  # most pixels
        _all_thumbnails_loaded(page, ".group img")
        rocket.locator("li", has=page.locator('[data-path="rocket-small.jpg"]')).get_by_role(
            "button", name="Keep this one").click()
        expect(rocket.locator("li.keeper .result")).to_have_attribute("data-path", "rocket-small.jpg")
        expect(rocket.locator("li.keeper")).to_contain_text("chosen by you")
        page.screenshot(path=tmp_path / "picked.png", full_page=True)

        rocket.get_by_role("button", name=re.compile(r"Resolve group")).click()
        expect(page.locator("#status")).to_contain_text("Moved 1 file to")
        assert (quarantine / "rocket.jpg").exists() and not (library / "rocket.jpg").exists()
        assert (library / "rocket-small.jpg").exists() and (library / "coffee-copy.jpg").exists()
        expect(page.locator(".group")).to_have_count(1)  # only the exact pair is left
        page.screenshot(path=tmp_path / "resolved.png", full_page=True)

        page.get_by_role("button", name="Undo the last action").click()
        expect(page.locator("#status")).to_contain_text("Put back 1 file")
        assert (library / "rocket.jpg").exists() and not (quarantine / "rocket.jpg").exists()
        expect(page.locator(".group")).to_have_count(2)
        page.screenshot(path=tmp_path / "undone.png", full_page=True)

        rocket.locator("li", has=page.locator('[data-path="rocket-small.jpg"]')).get_by_role(
            "button", name="Not a duplicate").click()  # a verdict: the pair is never grouped again
        expect(page.locator("#status")).to_contain_text("not a duplicate of the keeper")
        expect(page.locator(".group")).to_have_count(1)
        with open_store(library).catalog() as catalog:
            assert len(catalog.verdicts()) == 1


def test_serve_watch_shows_a_photo_added_to_the_folder_without_a_restart(page, library, tmp_path):
    watcher = Watcher(library, settle=0.5, options=EmbedOptions(device="cpu", workers=0))
    app = create_app(open_store(library, device="cpu"), display_path=shown, warm_up=False, watcher=watcher)
    with working_directory(library), BackgroundServer(app) as server:
        assert watcher.ready.wait(60), "the watcher's catch-up pass never finished"
        page.goto(server.url + "?view=dupes&threshold=0.8")
        expect(page.locator(".group")).to_have_count(2)
        (library / "chelsea-again.jpg").write_bytes((library / "chelsea.jpg").read_bytes())
        deadline = time.monotonic() + 60
        while httpx.get(server.url + "api/info").json()["embedded"] < 6 and time.monotonic() < deadline:
            time.sleep(0.1)
        page.get_by_role("button", name="Find duplicates").click()
        expect(page.locator(".group")).to_have_count(3)
        expect(page.locator('.group [data-path="chelsea-again.jpg"]')).to_be_visible()
        _all_thumbnails_loaded(page, ".group img")
        page.screenshot(path=tmp_path / "watched.png", full_page=True)
    assert not watcher.ready.is_set() or watcher.stopping  # the server's shutdown stopped the watcher
