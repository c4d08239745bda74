import pytest
import torch

from lookalike.errors import UnknownModelError
from lookalike.featurize import (
    DEFAULT_MODEL,
    ModelSpec,
    get_model_spec,
    list_models,
    register_model,
)
from lookalike.featurize.models.backbone import _classifier, _tap

REQUIRED = (
    "resnet18 resnet34 resnet50 resnet101 resnet152 efficientnet_b0 efficientnet_b1 efficientnet_b2 "
    "efficientnet_b3 efficientnet_b4 efficientnet_v2_s mobilenet_v3_large convnext_tiny convnext_small "
    "convnext_base regnet_y_800mf regnet_y_1_6gf regnet_y_3_2gf densenet121 vgg16"
).split()


def test_lists_the_default_first_and_every_required_model():
    names = [spec.name for spec in list_models()]
    assert names[0] == DEFAULT_MODEL
    assert set(REQUIRED) <= set(names)
    assert get_model_spec("vgg16").dim == 4096  # fc7, the classic recipe


def test_registering_a_name_twice_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_model(get_model_spec("resnet50"))


def test_unknown_names_suggest_close_ones():
    with pytest.raises(UnknownModelError, match="resnet50"):
        get_model_spec("resnet5")
    with pytest.raises(UnknownModelError, match="lookalike models"):
        get_model_spec("no-such-network")


def test_timm_names_resolve_through_timm():
    import timm  # noqa: F401 - the dev extra has it: a missing one fails
    spec = get_model_spec("timm:convnext_tiny")
    assert isinstance(spec, ModelSpec)
    assert (spec.source, spec.arch, spec.dim) == ("timm", "convnext_tiny", None)
    with pytest.raises(UnknownModelError, match="timm:resnet18"):
        get_model_spec("timm:resnet181")


@pytest.mark.slow
@pytest.mark.parametrize("name", [DEFAULT_MODEL, *REQUIRED])
def test_feature_node_is_the_input_of_the_last_linear_layer(name):
    """The registered node and dim are what the classifier reads (random weights and a small input: only the graph matters)."""
    spec = get_model_spec(name)
    model = _classifier(spec).eval()
    last_linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    seen = {}
    last_linear.register_forward_hook(lambda m, args, out: seen.setdefault("input", args[0]))
    x = torch.randn(2, 3, 64, 64)  # each network pools adaptively: a small input walks the same graph, 12x faster
    with torch.inference_mode():
        model(x)
        tapped = _tap(spec, model, spec.feature_node)(x)["features"]
    assert tapped.shape == (2, spec.dim)
    torch.testing.assert_close(tapped, seen["input"])


def _tiny_cnn():
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 2)
    )


def test_a_model_of_your_own_registers_and_needs_a_weights_file(monkeypatch, tmp_path, photos):
    from lookalike import create_extractor
    from lookalike.errors import WeightsNotFoundError
    from lookalike.featurize import Preprocessing
    from lookalike.featurize.models import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    register_model(ModelSpec("tiny", "mine", "tiny", Preprocessing(40, 32), "3", 8, _tiny_cnn))
    with pytest.raises(WeightsNotFoundError, match="weights=PATH"):
        create_extractor("tiny", device="cpu")

    torch.manual_seed(0)
    model = _tiny_cnn().eval()
    torch.save(model.state_dict(), tmp_path / "tiny.pth")
    extractor = create_extractor("tiny", device="cpu", weights=tmp_path / "tiny.pth")
    x = extractor.model_spec.preprocessing.normalize(extractor.model_spec.preprocessing(photos["coffee"])[None])
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(model[:4](x), dim=1).numpy()
    assert extractor.embed_images([photos["coffee"]]) == pytest.approx(expected, abs=1e-6)
