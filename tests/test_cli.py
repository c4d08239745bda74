import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from lookalike.cli import main
from lookalike.featurize import get_model_spec, load_image
from lookalike.featurize.models.weights import weights_location


def _invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_models_lists_every_model_and_what_is_offline():
    rows = {row["name"]: row for row in json.loads(_invoke("models", "--json").output)}
    assert rows["efficientnet_lite0"]["offline"] and rows["efficientnet_lite0"]["default"]
    assert rows["vgg16"]["dim"] == 4096
    assert not rows["resnet18"]["offline"]

    from torchvision.models import resnet18

    location = weights_location(get_model_spec("resnet18"))
    location.parent.mkdir(parents=True)
    torch.save(resnet18().state_dict(), location)
    table = _invoke("models").output
    assert any(line.split()[0] == "resnet18" and line.split()[-1] == "yes" for line in table.splitlines()[1:-2])


def test_layers_lists_tappable_layers():
    result = _invoke("layers", "efficientnet_lite0")
    assert result.exit_code == 0
    assert "_blocks.5" in result.output.split()


@pytest.mark.usefixtures("unreadable_as_root")
def test_embed_writes_vectors_and_reports_each_bad_file(corpus_dir, tmp_path, lite0):
    root, expected = corpus_dir
    out = tmp_path / "out" / "vectors.npz"
    result = CliRunner().invoke(main, ["embed", str(root), "-o", str(out), "--workers", "0"])
    assert result.exit_code == 0, result.output

    data = np.load(out, allow_pickle=False)
    good = [str(root / name) for name, reason in sorted(expected.items()) if reason is None and name != "18_folder.jpg"]
    assert list(data["keys"]) == good
    np.testing.assert_allclose(data["vectors"], lite0.embed_images([load_image(k) for k in good]), atol=1e-5)
    assert json.loads(str(data["spec"]))["model"] == "efficientnet_lite0"

    bad = [name for name, reason in expected.items() if reason is not None and name != "18_folder.jpg"]
    for name in bad:  # the folder named .jpg is not a file, so discovery never offers it
        assert f"skipped {root / name}: " in result.stderr
    assert f"{len(good)} embedded, {len(bad)} failed" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["embed", ".", "-o", "x.npz", "--model", "resnet5"], "unknown model 'resnet5'. Did you mean resnet50"),
        (["embed", ".", "-o", "x.npz", "--model", "resnet18"], "resnet18-f37072fd.pth"),
        (["embed", ".", "-o", "x.npz", "--layer", "nope"], "has no layer 'nope'"),
        (["layers", "nope"], "unknown model 'nope'"),
    ],
)
def test_errors_are_one_line_and_a_nonzero_exit(args, message, tmp_path, monkeypatch):
    from PIL import Image
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert message in result.stderr
    assert result.stderr.startswith("Error: ")
    assert "Traceback" not in result.stderr + result.output


def test_embed_with_no_images_says_so(tmp_path):
    result = CliRunner().invoke(main, ["embed", str(tmp_path), "-o", str(tmp_path / "x.npz")])
    assert result.exit_code == 1
    assert "no image files" in result.stderr


def test_python_m_lookalike_runs_end_to_end(tmp_path, photos):
    for name in ("chelsea", "coffee"):
        photos[name].save(tmp_path / f"{name}.jpg")
    out = tmp_path / "v.npz"
    done = subprocess.run([sys.executable, "-m", "lookalike", "embed", str(tmp_path), "-o", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "2 embedded, 0 failed" in done.stdout
    vectors = np.load(out)["vectors"]
    assert vectors.shape == (2, 1280)
    assert vectors[0] @ vectors[1] < 0.1  # a cat and a coffee cup are not alike: measured 0.088


def test_an_unwritable_output_fails_before_any_embedding(tmp_path, monkeypatch):
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    (tmp_path / "file").write_text("")

    def never(*args, **kwargs):
        raise AssertionError("the model must not be built when the output can't be written")

    monkeypatch.setattr("lookalike.featurize.create_extractor", never)
    result = CliRunner().invoke(main, ["embed", str(tmp_path / "a.png"), "-o", str(tmp_path / "file" / "v.npz")])
    assert result.exit_code == 1
    assert "cannot write" in result.stderr


def test_embed_with_nothing_embedded_exits_nonzero_and_writes_nothing(tmp_path):
    (tmp_path / "bad.jpg").write_text("not an image")
    result = CliRunner().invoke(main, ["embed", str(tmp_path / "bad.jpg"), "-o", str(tmp_path / "v.npz"),
                                       "--device", "cpu", "--workers", "0"])
    assert result.exit_code == 1 and "nothing embedded: all 1 files failed" in result.stderr
    assert "skipped " in result.stderr and not (tmp_path / "v.npz").exists()
