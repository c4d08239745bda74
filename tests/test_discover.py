import os

from lookalike.featurize.images.discover import discover

EXTENSIONS = frozenset({".jpg", ".png"})


def _touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_finds_images_recursively_skipping_hidden_folders_the_store_and_other_files(tmp_path):
    _touch(tmp_path / "a.jpg")
    _touch(tmp_path / "sub" / "deeper" / "B.PNG", b"xyz")
    _touch(tmp_path / "notes.txt")
    _touch(tmp_path / ".hidden" / "c.jpg")
    _touch(tmp_path / ".dotfile.jpg")
    _touch(tmp_path / "store" / "d.jpg")
    found = discover(tmp_path, EXTENSIONS, skip=tmp_path / "store")
    assert [f.key for f in found] == ["a.jpg", "sub/deeper/B.PNG"]
    assert found[1].size == 3 and found[1].mtime_ns == os.stat(tmp_path / "sub" / "deeper" / "B.PNG").st_mtime_ns
    assert found[1].path == str(tmp_path / "sub" / "deeper" / "B.PNG")


def test_follows_symlinks_without_looping(tmp_path):
    _touch(tmp_path / "photos" / "a.jpg")
    _touch(tmp_path / "elsewhere" / "b.jpg")
    os.symlink(tmp_path / "photos", tmp_path / "photos" / "loop")  # points back up the tree
    os.symlink(tmp_path / "elsewhere", tmp_path / "photos" / "linked")
    os.symlink(tmp_path / "elsewhere" / "b.jpg", tmp_path / "photos" / "file-link.jpg")
    os.symlink(tmp_path / "gone.jpg", tmp_path / "photos" / "broken.jpg")
    keys = [f.key for f in discover(tmp_path / "photos", EXTENSIONS)]
    assert keys == ["a.jpg", "file-link.jpg", "linked/b.jpg"]
