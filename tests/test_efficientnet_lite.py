"""The bundled default: real ImageNet weights, the original network's outputs, the right embedding."""

import numpy as np
import pytest
import torch

from lookalike.featurize import get_model_spec
from lookalike.featurize.models.efficientnet_lite import efficientnet_lite0
from lookalike.featurize.models.weights import load_state_dict

CATS = {281: "tabby", 282: "tiger cat", 285: "Egyptian cat"}
COFFEE = {967: "espresso"}  # measured: espresso 0.951, cup 0.015


@pytest.fixture(scope="module")
def classifier():
    model = efficientnet_lite0()
    model.load_state_dict(load_state_dict(get_model_spec("efficientnet_lite0")))
    return model.eval()


def _batch(photos, names):
    preprocessing = get_model_spec("efficientnet_lite0").preprocessing
    return preprocessing.normalize(torch.stack([preprocessing(photos[n]) for n in names]))


def test_names_real_photos_correctly(classifier, photos):
    with torch.inference_mode():
        top1 = classifier(_batch(photos, ["chelsea", "coffee"])).argmax(1).tolist()
    assert top1[0] in CATS, top1
    assert top1[1] in COFFEE, top1  # the README says espresso


def test_reproduces_timm_tf_efficientnet_lite0(classifier, photos):
    import timm
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    ours = classifier.state_dict()
    theirs = reference.state_dict()
    assert [t.shape for t in theirs.values()] == [t.shape for t in ours.values()]
    reference.load_state_dict(dict(zip(theirs.keys(), ours.values())))  # one for one, in order
    x = _batch(photos, ["chelsea", "coffee", "astronaut", "rocket"])
    odd = torch.nn.functional.interpolate(x, size=(225, 231))  # TF "same" padding turns symmetric on odd sizes
    with torch.inference_mode():
        assert torch.allclose(classifier(x), reference(x), atol=1e-5)
        assert torch.allclose(classifier(odd), reference(odd), atol=1e-5)


def test_embedding_is_the_pooled_pre_logits_of_the_same_pass(classifier, lite0, photos):
    names = ["chelsea", "coffee", "astronaut"]
    captured = {}
    hook = classifier._avg_pooling.register_forward_hook(lambda m, i, out: captured.setdefault("pooled", out.flatten(1)))
    with torch.inference_mode():
        try:
            logits = classifier(_batch(photos, names))
        finally:
            hook.remove()
        pooled = captured["pooled"]
        assert torch.allclose(classifier._fc(pooled), logits, atol=1e-4)  # it is what the classifier reads

    embeddings = lite0.embed_images([photos[n] for n in names])
    expected = torch.nn.functional.normalize(pooled, dim=1).numpy()
    assert embeddings.shape == (3, 1280)
    assert embeddings.dtype == np.float32
    np.testing.assert_allclose(embeddings, expected, atol=1e-5)
