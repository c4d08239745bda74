"""The guard against other sites: the Host check follows the bound socket, cross-site requests start no work,
and requests that change something need the session's token, a same-origin Origin, and loopback or --allow-actions."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import pytest
from click.testing import CliRunner
from conftest import photo
from fastapi.testclient import TestClient
from serve_helpers import jpeg_bytes, photo_folder, watched_app

from lookalike.cli import main
from lookalike.indexing import open_store
from lookalike.serve import BackgroundServer, create_app
from lookalike.serve.server import Server

LOCAL = "http://127.0.0.1"
CHELSEA = jpeg_bytes(photo("chelsea"))
HOSTILE = [{"sec-fetch-site": "cross-site"}, {"sec-fetch-site": "same-site"}, {"origin": "http://evil.example"},
           {"origin": "null"}, {"origin": "http://127.0.0.1:9999"}, {"origin": "http://127.0.0.1", "sec-fetch-site": "cross-site"}]
FRIENDLY = [{}, {"sec-fetch-site": "same-origin", "origin": LOCAL}, {"sec-fetch-site": "none"}, {"origin": "https://127.0.0.1"}]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return photo_folder(tmp_path_factory)


@pytest.fixture(scope="module")
def chelsea(folder) -> int:
    with open_store(folder).catalog() as catalog:
        return catalog.by_paths(["chelsea.jpg"])["chelsea.jpg"].id


@pytest.fixture(scope="module")
def watched(folder):
    guard, searches, done = watched_app(folder)
    with TestClient(guard, base_url=LOCAL) as client:
        yield client, guard, searches, done


def _work(chelsea: int) -> list[tuple[str, str, dict]]:
    upload = {"files": {"image": ("c.jpg", CHELSEA, "image/jpeg")}}
    return [("GET", f"/api/similar/{chelsea}", {}), ("GET", "/api/dupes?threshold=0.5", {}),
            ("GET", f"/api/thumbs/{chelsea}?size=100", {}), ("GET", f"/api/images/{chelsea}", {}),
            ("GET", "/api/failures", {}), ("GET", "/api/session", {}), ("POST", "/api/search", upload),
            ("POST", "/api/predict", upload)]


def test_a_request_from_another_site_starts_no_work_on_any_endpoint(watched, chelsea):
    client, guard, searches, _ = watched
    guard.app.paths.clear()
    for method, path, request in _work(chelsea):
        for headers in HOSTILE:
            response = client.request(method, path, headers=headers, **request)
            assert response.status_code == 403, (path, headers, response.text)
            assert "another" in response.json()["error"] and response.headers["x-content-type-options"] == "nosniff"
    assert guard.app.paths == [] and searches == []  # refused before any route ran, let alone a search
    for path in ("/", "/static/app.js", "/static/style.css", "/api/info", "/openapi.json"):  # what any site may link to
        for headers in HOSTILE:
            assert client.get(path, headers=headers).status_code == 200, (path, headers)


def test_the_page_itself_and_direct_calls_are_answered(watched, chelsea):
    client, guard, searches, _ = watched
    for method, path, request in _work(chelsea):
        for headers in FRIENDLY:
            response = client.request(method, path, headers=headers, **request)
            assert response.status_code == (404 if path == "/api/predict" else 200), (path, headers, response.text)
    assert {"similar", "knn"} <= set(searches)  # /api/dupes searches the store through knn


def test_a_request_that_changes_something_needs_the_token_and_a_same_origin_origin(watched, folder):
    client, _, _, done = watched
    session = client.get("/api/session").json()
    assert session["header"] == "X-Lookalike-Token" and len(session["token"]) >= 40 and session["actions"] is True
    token = {"x-lookalike-token": session["token"]}
    refusals = {
        "no token": {"origin": LOCAL},
        "a wrong token": {"origin": LOCAL, "x-lookalike-token": session["token"][:-2] + "xx"},
        "no origin": token,
        "a foreign origin": {**token, "origin": "http://evil.example"},
        "another port": {**token, "origin": "http://127.0.0.1:8765"},
        "a cross-site fetch": {**token, "origin": LOCAL, "sec-fetch-site": "cross-site"},
    }
    for case, headers in refusals.items():
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            response = client.request(method, "/api/test/action", headers=headers, json={"case": case})
            assert response.status_code == 403, (case, method, response.text)
            assert response.json()["error"]
    assert done == []
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        response = client.request(method, "/api/test/action", headers={**token, "origin": LOCAL}, json={"method": method})
        assert response.status_code == 200, response.text
    assert [d["method"] for d in done] == ["POST", "PUT", "PATCH", "DELETE"]
    with TestClient(create_app(open_store(folder), warm_up=False), base_url=LOCAL) as other:  # another server start
        assert other.get("/api/session").json()["token"] != session["token"]
    ok = client.post("/api/search", files={"image": ("c.jpg", CHELSEA, "image/jpeg")}, data={"k": "1"})
    assert ok.status_code == 200  # a search by upload changes nothing: no token needed


def test_the_review_s_actions_are_refused_without_the_token_and_the_page_s_origin(folder, tmp_path):
    guard, _, _ = watched_app(folder, quarantine=tmp_path / "q")
    actions = [("/api/dupes/resolve", {"threshold": 0.9, "generation": -1, "groups": [{"keeper": 1, "remove": [2]}]}),
               ("/api/distinct", {"ids": [10**12, 10**12 + 1]}), ("/api/undo", None)]  # no such images: nothing to change
    with TestClient(guard, base_url=LOCAL) as client:
        token = {"x-lookalike-token": client.get("/api/session").json()["token"]}
        for path, body in actions:
            for headers in ({"origin": LOCAL}, token, {**token, "origin": "http://evil.example"}):
                assert client.post(path, headers=headers, json=body).status_code == 403, (path, headers)
        assert not any(p in guard.app.paths for p, _ in actions)  # refused before the app
        answers = [client.post(path, headers={**token, "origin": LOCAL}, json=body) for path, body in actions]
    assert [a.status_code for a in answers] == [409, 404, 409]  # reached the review, which said no
    assert "store changed" in answers[0].json()["error"] and "nothing to undo" in answers[2].json()["error"]
    assert not (tmp_path / "q").exists()


def _raw(url: str, path: str, method: str = "GET", headers: dict | None = None) -> tuple[int, bytes]:
    host, port = url.split("//")[1].rstrip("/").rsplit(":", 1)
    connection = http.client.HTTPConnection("127.0.0.1" if host in ("0.0.0.0", "[::]") else host.strip("[]"), int(port), timeout=30)
    try:
        connection.putrequest(method, path, skip_host=True)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        connection.putheader("Content-Length", "0")
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.fixture
def rebinding(monkeypatch):
    """photos.test resolves to 127.0.0.1, as a name in /etc/hosts (or an attacker's DNS) would."""
    resolve = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: resolve("127.0.0.1" if host == "photos.test" else host, *a, **k))


def test_a_host_name_bound_to_loopback_keeps_the_host_check(folder, rebinding, monkeypatch):
    made = []
    run = Server.run
    monkeypatch.setattr(Server, "run", lambda self: made.append(self))
    result = CliRunner().invoke(main, ["serve", "--store", str(folder / ".lookalike"), "--host", "photos.test", "--port", "0"])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr and "at http://127.0.0.1:" in result.stdout  # loopback: no network warning
    server = made[0]
    thread = threading.Thread(target=run, args=(server,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        port = server.url.rstrip("/").rsplit(":", 1)[1]
        for host in ("rebound.attacker.example", f"rebound.attacker.example:{port}", "photos.test", "192.168.1.5"):
            status, body = _raw(server.url, "/api/info", headers={"Host": host})
            assert status == 400 and b"answers only to localhost" in body, host
        assert _raw(server.url, "/api/info", headers={"Host": f"127.0.0.1:{port}"})[0] == 200
        assert _raw(server.url, "/api/info", headers={"Host": f"localhost:{port}"})[0] == 200
    finally:
        server.stop()
        thread.join(30)


def test_beyond_loopback_any_host_is_answered_and_nothing_may_change_without_allow_actions(folder):
    for allow, expected in ((False, 403), (True, 200)):
        guard, _, done = watched_app(folder, allow_actions=allow)
        with BackgroundServer(guard, host="0.0.0.0") as server:
            port = server.url.rstrip("/").rsplit(":", 1)[1]
            named = {"Host": f"photos.example:{port}"}
            status, body = _raw(server.url, "/api/session", headers=named)
            assert status == 200 and json.loads(body)["actions"] is allow
            token = json.loads(body)["token"]
            status, body = _raw(server.url, "/api/test/action", "POST",
                                {**named, "Origin": f"http://photos.example:{port}", "X-Lookalike-Token": token})
            assert status == expected, body
            if not allow:
                assert "--allow-actions" in json.loads(body)["error"]
        assert len(done) == (1 if allow else 0)


def test_the_api_documentation_pages_are_off_unless_asked_for(folder):
    with TestClient(create_app(open_store(folder), warm_up=False), base_url=LOCAL) as plain:
        for path in ("/docs", "/redoc"):
            response = plain.get(path)
            assert response.status_code == 404 and "cdn" not in response.text.lower()
            assert "default-src 'self'" in response.headers["content-security-policy"]
        assert "/api/search" in plain.get("/openapi.json").json()["paths"]
    with TestClient(create_app(open_store(folder), warm_up=False, api_docs=True), base_url=LOCAL) as documented:
        assert documented.get("/docs").status_code == 200 and "swagger-ui" in documented.get("/docs").text
        assert documented.get("/redoc").status_code == 200
