import numpy as np
import pytest
import torch
from conftest import photo

from lookalike.featurize import Preprocessing, get_model_spec, list_models

TORCHVISION = [spec.name for spec in list_models() if spec.source == "torchvision"]


def _ours(spec, image) -> torch.Tensor:
    pixels = spec.preprocessing(image)
    assert pixels.dtype == torch.uint8
    return spec.preprocessing.normalize(pixels.unsqueeze(0))[0]


def _assert_same_output(spec, reference) -> None:
    for image in _test_images():
        expected = reference(image)
        ours = _ours(spec, image)
        assert ours.shape == expected.shape
        assert (ours - expected).abs().max() <= 1e-5


def _test_images():
    """Landscape and portrait real photos, one of them grayscale expanded to RGB."""
    chelsea = photo("chelsea")
    return [chelsea, photo("astronaut").crop((0, 0, 300, 512)), photo("coffee").convert("L").convert("RGB")]


@pytest.mark.parametrize("name", TORCHVISION)
def test_matches_torchvision_weights_transforms(name):
    from torchvision.models import get_model_weights

    reference = get_model_weights(name).DEFAULT.transforms()
    _assert_same_output(get_model_spec(name), reference)


def _timm_transform(arch: str):
    import timm
    from timm.data import create_transform, resolve_data_config

    cfg = resolve_data_config({}, pretrained_cfg=timm.models.get_pretrained_cfg(arch).to_dict())
    return create_transform(**cfg, is_training=False)


@pytest.mark.parametrize(
    "name, arch",
    [
        ("efficientnet_lite0", "tf_efficientnet_lite0"),  # the bundled model keeps timm's eval contract
        ("timm:resnet18", "resnet18"),
        ("timm:convnext_tiny", "convnext_tiny"),
        ("timm:vit_small_patch16_224", "vit_small_patch16_224"),
    ],
)
def test_matches_timm_eval_transform(name, arch):
    reference = _timm_transform(arch)
    _assert_same_output(get_model_spec(name), reference)


def test_roundtrips_through_a_dict():
    preprocessing = get_model_spec("efficientnet_b3").preprocessing
    assert Preprocessing.from_dict(preprocessing.to_dict()) == preprocessing


def test_rejects_an_unknown_interpolation_or_crop_mode():
    with pytest.raises(ValueError):
        Preprocessing(256, 224, interpolation="sinc")
    with pytest.raises(ValueError, match="crop_mode"):
        Preprocessing(256, 224, crop_mode="border")


def test_absurdly_thin_images_are_refused_instead_of_resized_to_gigabytes():
    from PIL import Image

    spec = get_model_spec("efficientnet_lite0")
    with pytest.raises(ValueError, match="aspect ratio"):
        spec.preprocessing(Image.new("RGB", (10_000, 1)))
    assert spec.preprocessing(Image.new("RGB", (1000, 10))).shape == (3, 224, 224)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet50", "efficientnet_b3"])
def test_the_torch_free_pixels_equal_torchvisions_resize_and_crop_exactly(name):
    """``pixels`` (PIL and numpy only, what the ONNX Runtime path runs) against torchvision's own
    functions on the same PIL image: identical uint8 values, also where the crop is larger than
    the image (padded with black) and where the centre falls on a half pixel."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    spec = get_model_spec(name).preprocessing
    base = photo("astronaut")
    images = _test_images() + [base.resize(size) for size in ((301, 451), (257, 999), (1001, 256), (100, 80), (5, 300))]
    images.append(Preprocessing(200, 240, "bilinear"))  # a crop larger than the resize: black borders
    for image in images:
        pre = spec
        if isinstance(image, Preprocessing):
            pre, image = image, base
        size = [pre.resize_size, pre.resize_size] if pre.crop_mode == "squash" else [pre.resize_size]
        resized = F.resize(image, size, interpolation=InterpolationMode(pre.interpolation), antialias=True)
        expected = F.pil_to_tensor(F.center_crop(resized, [pre.crop_size])).numpy()
        ours = pre.pixels(image)
        assert ours.dtype == np.uint8 and ours.flags.c_contiguous
        np.testing.assert_array_equal(ours, expected)


def test_the_alpha_field_reads_old_records_as_white_and_leaves_them_as_they_were():
    """Specs written before ``alpha`` existed (stores, classifier and .lkft files) flattened transparency
    on white: read back so, and written back byte for byte as they were (so their ONNX export key too)."""
    new = get_model_spec("efficientnet_lite0").preprocessing
    assert new.alpha == "composite" and new.to_dict()["alpha"] == "composite"
    old_record = {k: v for k, v in new.to_dict().items() if k != "alpha"}
    old = Preprocessing.from_dict(old_record)
    assert old.alpha == "white"
    assert old.to_dict() == old_record
    assert Preprocessing.from_dict(new.to_dict()) == new != old
    with pytest.raises(ValueError, match="alpha"):
        Preprocessing(256, 224, alpha="grey")
