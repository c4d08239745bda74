"""Weights come from the hub cache, a file, or nowhere with a message that says what to do.

Every torchvision test saves randomly initialised weights under the exact file name
torchvision would download, so nothing is ever fetched.
"""

import numpy as np
import pytest
import torch

from lookalike import create_extractor
from lookalike.errors import InvalidWeightsError, WeightsNotFoundError
from lookalike.featurize import get_model_spec, weights_available
from lookalike.featurize.models.weights import hub_checkpoint_dir, weights_location


def _random_torchvision(name: str, seed: int = 0):
    from torchvision.models import get_model

    torch.manual_seed(seed)
    return get_model(name, weights=None).eval()


def _cache(name: str, model) -> None:
    location = weights_location(get_model_spec(name))
    location.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), location)


def test_offline_with_nothing_cached_names_the_file_and_the_folder():
    spec = get_model_spec("resnet18")
    assert not weights_available(spec)
    with pytest.raises(WeightsNotFoundError) as info:
        create_extractor("resnet18", device="cpu")
    message = str(info.value)
    assert "resnet18-f37072fd.pth" in message
    assert str(hub_checkpoint_dir()) in message
    assert "weights=PATH" in message


@pytest.mark.parametrize("name, head", [("resnet18", "fc"), ("mobilenet_v3_large", "classifier.3")])
def test_cached_torchvision_weights_give_the_penultimate_embedding(name, head, photos):
    from torchvision.models import get_model_weights

    model = _random_torchvision(name)
    _cache(name, model)
    assert weights_available(get_model_spec(name))
    extractor = create_extractor(name, device="cpu", runtime="torch")  # ONNX: tests/test_onnx_runtime.py

    # Reference: torchvision's own transforms and the model with its last layer removed.
    parent, _, leaf = head.rpartition(".")
    setattr(model.get_submodule(parent), leaf, torch.nn.Identity())
    transforms = get_model_weights(name).DEFAULT.transforms()
    images = [photos["chelsea"], photos["rocket"]]
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(model(torch.stack([transforms(i) for i in images])), dim=1).numpy()
    np.testing.assert_allclose(extractor.embed_images(images), expected, atol=1e-5)


def test_weights_path_is_used_and_recorded(tmp_path, photos):
    path = tmp_path / "mine.pth"
    torch.save(_random_torchvision("resnet18", seed=1).state_dict(), path)
    a = create_extractor("resnet18", device="cpu", weights=path, runtime="torch")
    _cache("resnet18", _random_torchvision("resnet18", seed=2))
    b = create_extractor("resnet18", device="cpu", runtime="torch")
    assert a.spec.weights_sha256 != b.spec.weights_sha256
    assert a.spec.model == b.spec.model
    assert not np.allclose(a.embed_images([photos["coffee"]]), b.embed_images([photos["coffee"]]))


def test_unreadable_or_mismatched_weights_are_refused(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(InvalidWeightsError, match="cannot read"):
        create_extractor("resnet18", device="cpu", weights=garbage)

    wrong = tmp_path / "resnet34.pth"
    torch.save(_random_torchvision("resnet34").state_dict(), wrong)
    with pytest.raises(InvalidWeightsError, match="don't fit resnet18"):
        create_extractor("resnet18", device="cpu", weights=wrong)

    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        create_extractor("resnet18", device="cpu", weights=tmp_path / "missing.pth")


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


def test_a_weights_file_that_runs_code_on_load_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": _Exploit()}, path)
    with pytest.raises(InvalidWeightsError):
        create_extractor("resnet18", device="cpu", weights=path)
    assert not (tmp_path / "pwned").exists()


def test_timm_model_offline_is_a_clear_error_and_takes_a_weights_file(tmp_path, photos):
    import timm
    with pytest.raises(WeightsNotFoundError, match="weights=PATH"):
        create_extractor("timm:resnet18", device="cpu")

    torch.manual_seed(0)
    reference = timm.create_model("resnet18", pretrained=False).eval()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    extractor = create_extractor("timm:resnet18", device="cpu", weights=path, runtime="torch")
    assert extractor.dim == 512

    reference.reset_classifier(0)
    with torch.inference_mode():
        x = extractor.model_spec.preprocessing.normalize(extractor.model_spec.preprocessing(photos["coffee"])[None])
        expected = torch.nn.functional.normalize(reference(x), dim=1).numpy()
    np.testing.assert_allclose(extractor.embed_images([photos["coffee"]]), expected, atol=1e-5)
