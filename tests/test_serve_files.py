"""Only what was indexed is served: an indexed file swapped for a symlink, replaced, or raced, gives no foreign bytes.

Each test works on its own copy of the indexed photo folder (store included), changes files
in it as someone with write access to the folder could, and asks for originals and thumbnails.
"""

from __future__ import annotations

import io
import os
import shutil
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from serve_helpers import photo_folder

from lookalike.featurize.options import EmbedOptions
from lookalike.indexing import index_folder, open_store
from lookalike.serve import create_app, files, gallery
from lookalike.store.catalog import FileRecord

LOCAL = "http://127.0.0.1"
SECRET = b"root:x:0:0:the server user's secret:/root:/bin/bash\n"


@pytest.fixture
def photos(tmp_path_factory, tmp_path):
    """A private copy of the indexed photo folder, its store inside it."""
    copy = tmp_path / "photos"
    shutil.copytree(photo_folder(tmp_path_factory), copy, symlinks=True)
    return copy


@pytest.fixture
def client(photos):
    with TestClient(create_app(open_store(photos, device="cpu"), warm_up=False), base_url=LOCAL) as client:
        yield client


def _record(folder, key: str) -> FileRecord:
    with open_store(folder).catalog() as catalog:
        return catalog.by_paths([key])[key]


def _forged(path, record: FileRecord, fill: bytes = b"S") -> None:
    """A file of other bytes with the size and modification time of an indexed one (what its owner can make)."""
    path.write_bytes((SECRET + fill * record.size)[: record.size])
    os.utime(path, ns=(record.mtime_ns, record.mtime_ns))


def _refused(client, image_id: int, status: int, reason: str) -> None:
    for endpoint in ("images", "thumbs"):
        response = client.get(f"/api/{endpoint}/{image_id}")
        assert response.status_code == status, (endpoint, response.status_code, response.content[:200])
        assert response.headers["content-type"] == "application/json" and reason in response.json()["error"]
        assert b"secret" not in response.content and b"SSSS" not in response.content


def test_an_indexed_file_swapped_for_a_symlink_to_a_file_outside_is_never_served(photos, client, tmp_path):
    victim = _record(photos, "coffee.png")
    (tmp_path / "notes.txt").write_bytes(SECRET)
    (photos / "coffee.png").unlink()
    (photos / "coffee.png").symlink_to(tmp_path / "notes.txt")
    _refused(client, victim.id, 404, "leads out of the indexed folder through a symlink")
    assert client.get(f"/api/similar/{victim.id}").status_code == 200  # its vector is still searchable


def test_a_symlink_out_of_the_folder_is_refused_even_to_a_file_forged_to_the_rows_size_and_time(photos, client, tmp_path):
    coffee, astronaut = _record(photos, "coffee.png"), _record(photos, "sub/astronaut.jpg")
    _forged(tmp_path / "coffee.png", coffee)
    (photos / "coffee.png").unlink()
    (photos / "coffee.png").symlink_to(tmp_path / "coffee.png")
    _refused(client, coffee.id, 404, "leads out of the indexed folder")
    (tmp_path / "elsewhere").mkdir()  # a whole folder on the path swapped for a link to one the attacker filled
    _forged(tmp_path / "elsewhere" / "astronaut.jpg", astronaut)
    (photos / "sub").rename(photos / "sub-old")
    (photos / "sub").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    _refused(client, astronaut.id, 404, "leads out of the indexed folder")


def test_a_file_replaced_by_other_bytes_is_409_until_it_is_indexed_again(photos, client, tmp_path):
    chelsea = _record(photos, "chelsea.jpg")
    before = os.stat(photos / "chelsea.jpg")
    (photos / "chelsea.jpg").write_bytes(SECRET * 10)  # another size, another modification time
    assert os.stat(photos / "chelsea.jpg").st_size != before.st_size
    _refused(client, chelsea.id, 409, "has changed since it was indexed")
    assert "bytes then" in client.get(f"/api/images/{chelsea.id}").json()["error"]

    coins = _record(photos, "coins.png")  # the same size, only the modification time moved
    os.utime(photos / "coins.png", ns=(coins.mtime_ns + 10**9, coins.mtime_ns + 10**9))
    _refused(client, coins.id, 409, "modified since")

    Image.open(photos / "sub" / "astronaut.jpg").save(photos / "chelsea.jpg")  # a real picture now: index it again
    index_folder(photos, options=EmbedOptions(device="cpu", workers=0))
    again = _record(photos, "chelsea.jpg")
    response = client.get(f"/api/images/{again.id}")
    assert response.status_code == 200 and response.content == (photos / "chelsea.jpg").read_bytes()


def test_a_fifo_or_a_folder_in_place_of_a_file_is_404_and_never_waited_on(photos, client):
    coins, chelsea = _record(photos, "coins.png"), _record(photos, "chelsea.jpg")
    (photos / "coins.png").unlink()
    os.mkfifo(photos / "coins.png")  # opened for reading without O_NONBLOCK, this would wait for a writer forever
    answers = []
    asking = threading.Thread(target=lambda: answers.append(client.get(f"/api/images/{coins.id}")), daemon=True)
    asking.start()
    asking.join(20)
    assert answers and answers[0].status_code == 404 and "no longer a regular file" in answers[0].json()["error"]
    (photos / "chelsea.jpg").unlink()
    (photos / "chelsea.jpg").mkdir()
    _refused(client, chelsea.id, 404, "no longer a regular file")
    (photos / "chelsea.jpg").rmdir()
    _refused(client, chelsea.id, 404, "is no longer on disk")


def test_a_folder_swapped_for_a_symlink_after_the_path_was_resolved_is_not_followed(photos, client, tmp_path, monkeypatch):
    astronaut = _record(photos, "sub/astronaut.jpg")
    (tmp_path / "elsewhere").mkdir()
    _forged(tmp_path / "elsewhere" / "astronaut.jpg", astronaut)
    resolve = os.path.realpath

    def resolve_then_swap(path, *args, **kwargs):  # the race: resolved while `sub` was a folder, opened after the swap
        real = resolve(path, *args, **kwargs)
        if str(path).endswith("sub/astronaut.jpg") and not (photos / "sub").is_symlink():
            (photos / "sub").rename(photos / "sub-old")
            (photos / "sub").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
        return real

    monkeypatch.setattr(files.os.path, "realpath", resolve_then_swap)
    response = client.get(f"/api/images/{astronaut.id}")
    assert response.status_code == 409 and "a symlink appeared on its path" in response.json()["error"]
    assert b"secret" not in response.content and (photos / "sub").is_symlink()


def test_a_file_swapped_for_a_symlink_after_its_path_was_resolved_is_not_followed(photos, client, tmp_path, monkeypatch):
    astronaut = _record(photos, "sub/astronaut.jpg")
    _forged(tmp_path / "secret.jpg", astronaut)  # the row's size and time: only O_NOFOLLOW stands in the way
    resolve = os.path.realpath

    def resolve_then_swap(path, *args, **kwargs):  # the race: resolved while it was the file, opened after the swap
        real = resolve(path, *args, **kwargs)
        leaf = photos / "sub" / "astronaut.jpg"
        if str(path).endswith("sub/astronaut.jpg") and not leaf.is_symlink():
            leaf.unlink()
            leaf.symlink_to(tmp_path / "secret.jpg")
        return real

    monkeypatch.setattr(files.os.path, "realpath", resolve_then_swap)
    response = client.get(f"/api/images/{astronaut.id}")
    assert response.status_code == 409 and "a symlink appeared on its path" in response.json()["error"]
    assert b"secret" not in response.content


def test_the_bytes_served_are_read_from_the_file_that_was_checked(photos, client, tmp_path, monkeypatch):
    rocket = _record(photos, "rocket.png")
    original = (photos / "rocket.png").read_bytes()
    os.link(photos / "rocket.png", tmp_path / "kept.png")  # the indexed file itself, kept to put back
    (tmp_path / "other.png").write_bytes(SECRET * 1000)
    check = gallery.open_indexed

    def check_then_replace(root, record):  # the file is replaced by another right after it was checked
        if not os.path.samefile(tmp_path / "kept.png", photos / "rocket.png"):
            os.link(tmp_path / "kept.png", tmp_path / "back.png")
            os.replace(tmp_path / "back.png", photos / "rocket.png")
        opened = check(root, record)
        shutil.copy(tmp_path / "other.png", tmp_path / "again.png")
        os.replace(tmp_path / "again.png", photos / "rocket.png")
        return opened

    monkeypatch.setattr(gallery, "open_indexed", check_then_replace)
    response = client.get(f"/api/images/{rocket.id}")
    assert response.status_code == 200 and response.content == original
    assert response.headers["content-type"] == "image/png" and int(response.headers["content-length"]) == len(original)
    thumb = client.get(f"/api/thumbs/{rocket.id}", params={"size": 64})
    assert thumb.status_code == 200, thumb.text
    picture = Image.open(io.BytesIO(original)).convert("RGB")
    small = Image.open(io.BytesIO(thumb.content)).convert("RGB")
    reference = np.asarray(picture.resize(small.size, Image.Resampling.BILINEAR), dtype=np.float32)
    assert np.abs(np.asarray(small, dtype=np.float32) - reference).mean() < 12


def test_a_symlink_that_stays_inside_the_folder_is_served(photos):
    (photos / "alias.jpg").symlink_to("sub/astronaut.jpg")
    info = os.stat(photos / "alias.jpg")
    record = FileRecord(1, "alias.jpg", info.st_size, info.st_mtime_ns, "ok", None, 0, 1)
    with files.open_indexed(str(photos.resolve()), record) as opened:
        assert os.pread(opened.fd, info.st_size, 0) == (photos / "sub" / "astronaut.jpg").read_bytes()
        assert opened.name == "alias.jpg" and opened.real == str((photos / "sub" / "astronaut.jpg").resolve())
