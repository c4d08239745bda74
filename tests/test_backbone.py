import numpy as np
import pytest
import torch

from lookalike import create_extractor, list_layers
from lookalike.errors import UnknownLayerError
from lookalike.featurize import get_model_spec
from lookalike.featurize.models.efficientnet_lite import efficientnet_lite0
from lookalike.featurize.models.weights import load_state_dict


def test_an_earlier_layer_is_global_average_pooled(photos):
    extractor = create_extractor(layer="_blocks.5", device="cpu", runtime="torch")  # ONNX: test_onnx_runtime.py
    assert extractor.dim == 80
    assert extractor.spec.layer == "_blocks.5"

    model = efficientnet_lite0()
    model.load_state_dict(load_state_dict(get_model_spec("efficientnet_lite0")))
    model.eval()
    seen = {}
    model._blocks[5].register_forward_hook(lambda m, args, out: seen.setdefault("map", out))
    preprocessing = extractor.model_spec.preprocessing
    with torch.inference_mode():
        model(preprocessing.normalize(preprocessing(photos["rocket"])[None]))
    expected = torch.nn.functional.normalize(seen["map"].mean(dim=(2, 3)), dim=1).numpy()
    np.testing.assert_allclose(extractor.embed_images([photos["rocket"]]), expected, atol=1e-5)


def test_layers_are_listed_from_input_to_output():
    names = list_layers(get_model_spec("efficientnet_lite0"))
    assert names.index("_blocks.5") < names.index("_avg_pooling") < names.index("_fc")


def test_an_unknown_layer_suggests_close_names_and_how_to_list_them():
    with pytest.raises(UnknownLayerError) as info:
        create_extractor(layer="_blocks.55", device="cpu")
    assert "_blocks.5" in str(info.value)
    assert "lookalike layers efficientnet_lite0" in str(info.value)


def test_a_node_that_is_not_an_activation_is_refused():
    # FX lists weights as nodes too; tapping one would give rows that are not images.
    with pytest.raises(UnknownLayerError):
        create_extractor(layer="_conv_stem._conv_stem_weight", device="cpu")
    assert "_conv_stem._conv_stem_weight" not in list_layers(get_model_spec("efficientnet_lite0"))


def test_channels_last_activations_are_pooled_over_space_not_channels(tmp_path, photos):
    """ConvNeXt blocks run in NHWC: the vector must be the 96 channels, not a spatial axis."""
    from torchvision.models import convnext_tiny

    torch.manual_seed(0)
    model = convnext_tiny().eval()
    torch.save(model.state_dict(), tmp_path / "convnext.pth")
    layer = "features.1.0.block.2"  # LayerNorm inside the first block, NHWC
    extractor = create_extractor("convnext_tiny", layer=layer, device="cpu", weights=tmp_path / "convnext.pth",
                                 runtime="torch")
    assert extractor.dim == 96

    seen = {}
    model.get_submodule(layer).register_forward_hook(lambda m, args, out: seen.setdefault("map", out))
    preprocessing = extractor.model_spec.preprocessing
    with torch.inference_mode():
        model(preprocessing.normalize(preprocessing(photos["coffee"])[None]))
    assert seen["map"].shape[-1] == 96
    expected = torch.nn.functional.normalize(seen["map"].mean(dim=(1, 2)), dim=1).numpy()
    np.testing.assert_allclose(extractor.embed_images([photos["coffee"]]), expected, atol=1e-5)
