"""The JSON API over a real store of real photos, checked against the CLI's own answers, plus every bad input."""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import photo
from fastapi.testclient import TestClient
from PIL import Image
from serve_helpers import edited_chelsea, jpeg_bytes, photo_folder, working_directory

from lookalike.cli import main
from lookalike.cli.options import shown
from lookalike.featurize import load_image
from lookalike.featurize.options import EmbedOptions
from lookalike.indexing import open_store
from lookalike.serve import BackgroundServer, create_app
from lookalike.serve.gallery import Gallery

LOCAL = "http://127.0.0.1"


@pytest.fixture(scope="module")
def folder(tmp_path_factory, onnx_cache_dir):
    # The session's ONNX cache from the start (conftest.no_network points each test at it):
    # indexing exports the network into it, and the server's warm-up, which may read the
    # setting after a test began, finds it there instead of exporting it again.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LOOKALIKE_CACHE", str(onnx_cache_dir))
        folder = photo_folder(tmp_path_factory)
        with working_directory(folder):
            yield folder


@pytest.fixture(scope="module")
def client(folder):
    app = create_app(open_store(folder, device="cpu"), display_path=shown)
    with TestClient(app, base_url=LOCAL) as client:
        yield client


@pytest.fixture(scope="module")
def ids(client):
    """path -> id, read from the API itself (every stored image is some image's neighbour)."""
    answer = client.get("/api/dupes", params={"threshold": -0.99, "k": 20}).json()
    return {m["path"]: m["id"] for group in answer["groups"] for m in group["members"]}


@pytest.mark.slow
def test_info_says_when_the_startup_warm_up_of_model_and_index_is_done(client, folder):
    deadline = time.monotonic() + 120
    while client.get("/api/info").json()["warm"] != {"model": True, "index": True} and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.get("/api/info").json()["warm"] == {"model": True, "index": True}
    with TestClient(create_app(open_store(folder, device="cpu"), warm_up=False), base_url=LOCAL) as cold:
        time.sleep(0.2)
        assert cold.get("/api/info").json()["warm"] == {"model": False, "index": False}


def test_a_search_alone_shares_its_scan_among_every_core_and_concurrent_ones_take_one(folder):
    store = open_store(folder, device="cpu")
    gallery = Gallery(store)
    vector = store.vectors()[2][0]
    real, seen, first_in, release = store.search, [], threading.Event(), threading.Event()

    def search(queries, k=10, *, workers=1, **more):
        seen.append(workers)
        if len(seen) == 1:  # the first search stays in flight until the second is done
            first_in.set()
            release.wait(30)
        return real(queries, k, workers=workers, **more)

    store.search = search
    first = threading.Thread(target=gallery.search, args=(vector, 3))
    first.start()
    assert first_in.wait(30)
    assert len(gallery.search(vector, 3)["hits"]) == 3
    release.set()
    first.join(30)
    gallery.search(vector, 3)
    assert seen == [os.cpu_count(), 1, os.cpu_count()]


def _cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_info_and_failures_describe_the_store(client):
    info = client.get("/api/info").json()
    assert (info["embedded"], info["failed"], info["spec"]["model"]) == (7, 1, "efficientnet_lite0")
    assert info["classifier"] is None and info["limits"]["max_upload_bytes"] == 25_000_000
    assert info == {**_cli("info", "--json"), "classifier": None, "limits": info["limits"], "warm": info["warm"]}
    failures = client.get("/api/failures").json()
    assert failures["total"] == 1 and failures["failures"] == _cli("failures", "--json")
    assert failures["failures"][0]["path"] == "broken.jpg" and failures["failures"][0]["reason"]


def test_search_by_upload_gives_what_lookalike_query_gives(client, tmp_path):
    query = edited_chelsea(tmp_path / "copy.jpg")
    answer = client.post("/api/search", files={"image": ("copy.jpg", query.read_bytes(), "image/jpeg")}, data={"k": "4"})
    assert answer.status_code == 200, answer.text
    hits = answer.json()["hits"]
    expected = _cli("query", query, "-k", 4, "--json")
    assert [(h["rank"], h["path"]) for h in hits] == [(e["rank"], e["path"]) for e in expected]
    np.testing.assert_allclose([h["score"] for h in hits], [e["score"] for e in expected], atol=2e-6)
    assert hits[0]["path"] == "chelsea.jpg" and hits[0]["score"] > 0.8 > hits[1]["score"]


def test_similar_leaves_the_image_out_as_query_does(client, ids):
    answer = client.get(f"/api/similar/{ids['chelsea.jpg']}", params={"k": 3}).json()
    assert answer["query"] == {"id": ids["chelsea.jpg"], "path": "chelsea.jpg"}
    expected = _cli("query", "chelsea.jpg", "-k", 3, "--json")
    assert [(h["rank"], h["path"], h["score"]) for h in answer["hits"]] == [(e["rank"], e["path"], e["score"]) for e in expected]
    assert all(ids[h["path"]] == h["id"] for h in answer["hits"])


def test_k_over_the_store_gives_every_other_image_and_threshold_filters(client, ids):
    everything = client.get(f"/api/similar/{ids['rocket.png']}", params={"k": 50}).json()["hits"]
    assert len(everything) == 6 and "rocket.png" not in [h["path"] for h in everything]
    assert [h["score"] for h in everything] == sorted((h["score"] for h in everything), reverse=True)
    close = client.get(f"/api/similar/{ids['rocket.png']}", params={"k": 50, "threshold": 0.8}).json()["hits"]
    assert close == [h for h in everything if h["score"] >= 0.8] and [h["path"] for h in close] == ["rocket-copy.jpg"]


def test_dupes_group_the_near_duplicate_as_the_cli_does(client, ids):
    answer = client.get("/api/dupes", params={"threshold": 0.8}).json()
    assert answer["total"] == 1
    members = answer["groups"][0]["members"]
    expected = _cli("dupes", "--threshold", 0.8, "--json")
    assert answer["groups"][0]["kind"] == "near" and members[0]["keep"] and not members[1]["keep"]
    assert [[(m["path"], m["score"], m["keep"]) for m in members]] == [
        [(e["path"], e["score_to_keeper"], e["keep"]) for e in g["members"]] for g in expected["groups"]]
    assert {m["path"] for m in members} == {"rocket.png", "rocket-copy.jpg"}
    assert all(ids[m["path"]] == m["id"] for m in members)
    assert client.get("/api/dupes", params={"threshold": 0.8, "limit": 1}).json()["groups"] == answer["groups"]
    assert client.get("/api/dupes", params={"threshold": 0.999}).json()["total"] == 0


def test_thumbnail_is_a_small_jpeg_of_the_image_cached_by_etag(client, ids, folder, monkeypatch):
    from lookalike.serve import thumbnails

    decoded = []
    monkeypatch.setattr(thumbnails, "load_image", lambda path, **kw: decoded.append(path) or load_image(path, **kw))
    response = client.get(f"/api/thumbs/{ids['coffee.png']}", params={"size": 64})
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    thumb = Image.open(io.BytesIO(response.content))
    original = Image.open(folder / "coffee.png").convert("RGB")
    assert thumb.format == "JPEG" and max(thumb.size) == 64
    reference = np.asarray(original.resize(thumb.size, Image.Resampling.BILINEAR), dtype=np.float32)
    assert np.abs(np.asarray(thumb, dtype=np.float32) - reference).mean() < 12  # the same picture, not another
    again = client.get(f"/api/thumbs/{ids['coffee.png']}", params={"size": 64},
                       headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304 and not again.content
    assert client.get(f"/api/thumbs/{ids['coffee.png']}", params={"size": 64}).content == response.content
    assert len(decoded) == 1  # made once, then served from the cache
    assert max(Image.open(io.BytesIO(client.get(f"/api/thumbs/{ids['coffee.png']}").content)).size) == 256


def test_odd_thresholds_and_sizes_are_rounded_so_that_each_costs_little(folder, monkeypatch):
    from lookalike.serve import gallery, thumbnails

    store = open_store(folder, device="cpu")
    grouped, decoded = [], []
    real = gallery.find_groups
    monkeypatch.setattr(gallery, "find_groups", lambda store, settings: grouped.append(settings.threshold) or real(store, settings))
    monkeypatch.setattr(thumbnails, "load_image", lambda path, **kw: decoded.append(kw["draft_size"]) or load_image(path, **kw))
    with TestClient(create_app(store, warm_up=False), base_url=LOCAL) as client:
        answers = [client.get("/api/dupes", params={"threshold": t}).json() for t in (0.951, 0.9512, 0.95104, 0.9508)]
        assert {a["threshold"] for a in answers} == {0.951} and grouped == [0.951]  # one computation for four thresholds
        assert client.get("/api/dupes", params={"threshold": 0.9999}).json()["threshold"] == 0.9999  # fine near 1
        chelsea = client.get("/api/dupes", params={"threshold": -0.99}).json()["groups"][0]["members"][0]["id"]
        sizes = [max(Image.open(io.BytesIO(client.get(f"/api/thumbs/{chelsea}", params={"size": s}).content)).size)
                 for s in (100, 101, 127, 128, 16, 300)]
    assert sizes == [128, 128, 128, 128, 32, 384] and decoded == [128, 32, 384]


def test_the_original_file_comes_back_byte_for_byte(client, ids, folder):
    response = client.get(f"/api/images/{ids['sub/astronaut.jpg']}")
    assert response.status_code == 200 and response.content == (folder / "sub" / "astronaut.jpg").read_bytes()
    assert response.headers["content-type"] == "image/jpeg" and "inline" in response.headers["content-disposition"]


def test_a_failed_or_unknown_id_is_404(client, folder):
    with open_store(folder).catalog() as catalog:
        broken = catalog.by_paths(["broken.jpg"])["broken.jpg"].id  # a file the indexer could not read has an id too
    for image_id in (broken, 1_000_000, 2**63 - 1):
        for endpoint in ("similar", "thumbs", "images"):
            response = client.get(f"/api/{endpoint}/{image_id}")
            assert response.status_code == 404 and "no embedded image has id" in response.json()["error"]


def test_an_empty_store_answers_409_to_a_search_and_no_groups(tmp_path):
    from lookalike.indexing import index_folder

    (tmp_path / "empty").mkdir()
    index_folder(tmp_path / "empty", options=EmbedOptions(device="cpu"))
    app = create_app(open_store(tmp_path / "empty", device="cpu"), warm_up=False)
    with TestClient(app, base_url=LOCAL) as client:
        assert client.get("/api/info").json()["embedded"] == 0
        response = client.post("/api/search", files={"image": ("c.jpg", CHELSEA, "image/jpeg")})
        assert response.status_code == 409 and "no vectors yet" in response.json()["error"]
        assert client.get("/api/dupes").json()["groups"] == []


@pytest.fixture(scope="module")
def strict(folder):
    """An app with small limits: 200 kB uploads, 1 MP images."""
    app = create_app(open_store(folder, device="cpu", max_pixels=1_000_000), display_path=shown,
                     max_upload_bytes=200_000, warm_up=False)
    with TestClient(app, base_url=LOCAL) as client:
        yield client


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _noise_png(side: int) -> bytes:
    return _png(Image.fromarray(np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)))


CHELSEA = jpeg_bytes(photo("chelsea"))
BAD_UPLOADS = {
    "empty": ({"files": {"image": ("e.jpg", b"", "image/jpeg")}}, 400, "empty"),
    "too large": ({"files": {"image": ("big.png", _noise_png(400), "image/png")}}, 413, "0.481 MB, over the limit of 0.2 MB"),
    "just too large": ({"files": {"image": ("big.png", _noise_png(280), "image/png")}}, 413, "over the limit of 0.2 MB"),
    "not an image": ({"files": {"image": ("t.jpg", b"this is not an image\n" * 20, "image/jpeg")}}, 422, "not an image"),
    "truncated": ({"files": {"image": ("half.jpg", CHELSEA[: len(CHELSEA) // 2], "image/jpeg")}}, 422, "truncated"),
    "too many pixels": ({"files": {"image": ("wide.png", _png(Image.new("L", (1200, 1000))), "image/png")}},
                        422, "over the limit of 1,000,000"),
    "no image field": ({"data": {"k": "3"}}, 400, "field named 'image'"),
    "image as text": ({"data": {"image": "chelsea.jpg"}}, 400, "field named 'image'"),
    "k not a number": ({"files": {"image": ("c.jpg", CHELSEA, "image/jpeg")}, "data": {"k": "ten"}}, 422, "k must be an integer"),
    "k out of range": ({"files": {"image": ("c.jpg", CHELSEA, "image/jpeg")}, "data": {"k": "0"}}, 422, "k must be between"),
    "threshold nan": ({"files": {"image": ("c.jpg", CHELSEA, "image/jpeg")}, "data": {"threshold": "nan"}}, 422, "threshold"),
    "json body": ({"json": {"image": "x"}}, 400, "field named 'image'"),
    "broken multipart": ({"content": b"--xyz\r\nContent-Disp", "headers": {"content-type": "multipart/form-data; boundary=xyz"}},
                         400, "multipart"),
}



@pytest.mark.parametrize("case", sorted(BAD_UPLOADS))
def test_a_bad_upload_is_a_4xx_json_error_with_a_reason_and_the_server_lives_on(strict, case):
    request, status, reason = BAD_UPLOADS[case]
    response = strict.post("/api/search", **request)
    assert response.status_code == status, response.text
    assert reason in response.json()["error"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert strict.get("/api/info").status_code == 200
    ok = strict.post("/api/search", files={"image": ("c.jpg", CHELSEA, "image/jpeg")}, data={"k": "1"})
    assert ok.status_code == 200 and ok.json()["hits"][0]["path"] == "chelsea.jpg"


def test_a_body_over_the_limit_is_cut_off_while_it_streams(strict):
    def chunks():  # no Content-Length: only counting the bytes as they come can stop it
        for _ in range(100):
            yield b"x" * 10_000

    response = strict.post("/api/search", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert response.status_code == 413 and "over the limit" in response.json()["error"]
    declared = strict.post("/api/search", content=b"x" * 400_000, headers={"content-type": "multipart/form-data; boundary=b"})
    assert declared.status_code == 413 and "0.4 MB" in declared.json()["error"]
    assert strict.get("/api/info").status_code == 200


ID_ATTEMPTS = ["..", "../../../../etc/passwd", "..%2F..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
               "%2Fetc%2Fpasswd", "chelsea.jpg", "sub%2Fastronaut.jpg", "-1", "1e3", "0x1", "1%00", "99999999999999999999",
               "~root", "1;ls", "%252e%252e%252fetc"]


@pytest.fixture(scope="module")
def live(folder):
    """A real server: paths reach it exactly as sent, with no client tidying up the dots."""
    with BackgroundServer(create_app(open_store(folder), display_path=shown, warm_up=False)) as server:
        yield server


def _raw_get(server, path: str) -> tuple[int, dict, bytes]:
    host, port = server.url.split("//")[1].rstrip("/").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("GET", path)  # sent verbatim: http.client does not normalise
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("endpoint", ["/api/similar/{}", "/api/thumbs/{}", "/api/images/{}", "/api/similar/1?k={}",
                                      "/api/thumbs/1?size={}", "/api/dupes?threshold={}", "/static/{}"])
def test_path_traversal_in_every_id_position_is_refused(live, endpoint):
    for attempt in ID_ATTEMPTS:
        status, headers, body = _raw_get(live, endpoint.format(attempt))
        assert 400 <= status < 500, (attempt, status)
        assert headers["content-type"] == "application/json" and "error" in json.loads(body)
        assert b"root:" not in body and headers["x-content-type-options"] == "nosniff"
    assert _raw_get(live, "/api/info")[0] == 200


def test_every_answer_carries_nosniff_even_an_internal_error(live, monkeypatch):
    def broken(limit):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(live.app.services.gallery, "failures", broken)
    status, headers, body = _raw_get(live, "/api/failures")
    assert status == 500 and "RuntimeError" in json.loads(body)["error"] and headers["x-content-type-options"] == "nosniff"
    for path in ("/", "/static/app.js", "/nowhere", "/docs", "/openapi.json", "/api/info", "/api/thumbs/1"):
        assert _raw_get(live, path)[1]["x-content-type-options"] == "nosniff", path
    assert _raw_get(live, "/nowhere")[0] == 404 and _raw_get(live, "/api/info")[0] == 200


def test_only_loopback_host_names_are_answered_by_default(client, folder):
    for host in ("evil.example:8765", "127.0.0.1.evil.example", "192.168.1.5:8765", ""):
        assert client.get("/api/info", headers={"host": host}).status_code == 400, host
    for host in ("localhost:8765", "127.0.0.1", "[::1]:8765", "127.0.0.2:8765"):
        assert client.get("/api/info", headers={"host": host}).status_code == 200, host
    app = create_app(open_store(folder), warm_up=False)  # served on an address beyond loopback: any Host
    with TestClient(app, base_url="http://photos.example") as public:
        assert public.get("/api/info").status_code == 200


def test_the_api_never_writes_to_the_store(folder, tmp_path, ids, client):
    def state():
        store = folder / ".lookalike"
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(store.iterdir()) if p.is_file()}

    before = state()
    image = {"image": ("c.jpg", edited_chelsea(tmp_path / "c.jpg").read_bytes(), "image/jpeg")}
    for _ in range(2):
        client.get("/api/info"), client.get("/api/failures"), client.get(f"/api/similar/{ids['coins.png']}")
        client.get("/api/dupes", params={"threshold": 0.5}), client.get(f"/api/thumbs/{ids['coins.png']}")
        client.get(f"/api/images/{ids['coins.png']}"), client.post("/api/search", files=image)
        client.post("/api/search", files={"image": ("t.jpg", b"text", "image/jpeg")})
    assert state() == before


def test_predict_labels_an_upload_as_lookalike_predict_does(folder, tmp_path, ids):
    from sklearn.linear_model import LogisticRegression

    from lookalike.classify.persist import SavedModel, save_model

    store = open_store(folder, device="cpu")
    paths = sorted(ids)
    labels = ["cat" if "chelsea" in p else "rocket" if "rocket" in p else "other" for p in paths]
    estimator = LogisticRegression(C=10).fit(store.get_vectors([folder / p for p in paths]), labels)
    model = tmp_path / "model.skops"
    save_model(SavedModel(estimator, store.info()["spec"], sorted(set(labels)), {}, "logreg"), model)
    query = edited_chelsea(tmp_path / "copy.jpg")

    app = create_app(store, display_path=shown, classifier=model)
    with TestClient(app, base_url=LOCAL) as client:
        predicted = client.post("/api/predict", files={"image": ("q.jpg", query.read_bytes(), "image/jpeg")},
                                data={"top": "2"}).json()["predicted"]
        expected = _cli("predict", model, query, "--top", 2, "--json", "--device", "cpu")[0]
        assert [p["label"] for p in predicted] == expected["labels"] and predicted[0]["label"] == "cat"
        np.testing.assert_allclose([p["probability"] for p in predicted], expected["probabilities"], atol=1e-5)
        searched = client.post("/api/search", files={"image": ("q.jpg", query.read_bytes(), "image/jpeg")}).json()
        assert searched["predicted"][0]["label"] == "cat" and len(searched["predicted"]) == 3
        similar = client.get(f"/api/similar/{ids['rocket-copy.jpg']}").json()
        assert similar["predicted"][0]["label"] == "rocket"
        assert client.get("/api/info").json()["classifier"]["classes"] == ["cat", "other", "rocket"]


def test_predict_without_a_classifier_says_how_to_get_one(client):
    response = client.post("/api/predict", files={"image": ("c.jpg", CHELSEA, "image/jpeg")})
    assert response.status_code == 404 and "--classifier" in response.json()["error"]


def test_a_classifier_for_other_vectors_is_refused_at_start(folder, tmp_path):
    from sklearn.svm import LinearSVC

    from lookalike.classify.persist import SavedModel, save_model
    from lookalike.errors import ModelMismatchError

    spec = {**open_store(folder).info()["spec"], "model": "resnet18", "dim": 512}
    rng = np.random.default_rng(0)
    model = tmp_path / "other.skops"
    save_model(SavedModel(LinearSVC().fit(rng.normal(size=(6, 512)), ["a", "b"] * 3), spec, ["a", "b"], {}, "svm"), model)
    with pytest.raises(ModelMismatchError, match="resnet18"):
        create_app(open_store(folder), classifier=model)


def test_the_page_and_the_openapi_document(client):
    page = client.get("/")
    assert page.status_code == 200 and '<input type="file"' in page.text and "/static/app.js" in page.text
    assert "http" not in page.text.replace('"http-equiv', "")  # nothing from another origin: works offline
    script = client.get("/static/app.js")
    assert script.headers["content-type"].startswith("text/javascript") and "data-path" not in script.text
    assert "dataset" in script.text and "default-src 'self'" in page.headers["content-security-policy"]
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/info", "/api/failures", "/api/search", "/api/similar/{image_id}", "/api/dupes",
            "/api/thumbs/{image_id}", "/api/images/{image_id}", "/api/predict"} <= set(paths)
    assert "multipart/form-data" in paths["/api/search"]["post"]["requestBody"]["content"]
