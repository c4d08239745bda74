"""Building an extractor: ``create_extractor`` for a model name, ``extractor_for_spec`` for stored vectors.

Two runtimes run the same network. ONNX Runtime (``runtimes/onnx_extractor.py``) is the
CPU's: the network is exported once and cached, and a process that finds the export of a
stored spec in the cache embeds without importing torch. torch (``runtimes/torch_extractor.py``)
runs CUDA, MPS, reduced precision and ``torch.compile``, and any network the exporter can't
take. ``runtime="auto"`` picks ONNX Runtime on the CPU and torch elsewhere; vectors from
either are interchangeable (the export is verified against torch), so the spec records the
runtime without comparing it. The interface they share is ``base.Extractor``.
"""

from __future__ import annotations

import dataclasses
import logging
import os

from ..errors import ModelFileError, OnnxExportError, SpecMismatchError
from .base import Extractor
from .models.registry import DEFAULT_MODEL, ModelSpec, is_finetuned_name, is_model_file
from .models.resolve import model_identity, resolve_model
from .models.spec import EmbeddingSpec, spec_differences
from .options import EmbedOptions

logger = logging.getLogger(__name__)


def create_extractor(name: str | os.PathLike = DEFAULT_MODEL, layer: str | None = None, *,
                     weights: str | os.PathLike | None = None, options: EmbedOptions | None = None,
                     alpha: str | None = None, **changes) -> Extractor:
    """Build an extractor for a model.

    Args:
        name: a registry name (see ``list_models()``), ``timm:<name>``, or a ``.lkft`` file.
        layer: an earlier graph node to tap and average-pool (``list_layers(name)``);
            default is the model's penultimate embedding.
        weights: a state dict file instead of the pretrained weights.
        options: how to run it (``EmbedOptions``: device, batch size, workers, runtime...).
        alpha: how transparent images are flattened (``Preprocessing.alpha``); default the model's own,
            ``"composite"`` (a ``.lkft`` file's recorded one). ``"white"`` makes vectors comparable with
            stores and classifier files made before that field existed.
        changes: ``EmbedOptions`` fields to change, e.g. ``device="cpu", batch_size=8``.

    Raises:
        UnknownModelError, UnknownLayerError, WeightsNotFoundError, InvalidWeightsError,
        MissingDependencyError, ModelFileError, LookalikeError (bad device, precision or runtime),
        OnnxExportError (``runtime="onnx"`` for a network that can't be exported).
        TypeError: a name in ``changes`` that is no ``EmbedOptions`` field.
    """
    options = EmbedOptions.of(options, **changes)
    spec = _with_alpha(resolve_model(name), alpha)
    use_onnx = options.wants_onnx()
    remembers = use_onnx and layer is None and weights is None and spec.source == "bundled"
    if remembers:  # the bundled model's export, found without torch: its spec was remembered when it was made
        cached = _remembered_onnx(spec, options)
        if cached is not None:
            return cached
    if not use_onnx:
        from .runtimes.devices import resolve_device
        from .runtimes.torch_extractor import autocast_dtype

        autocast_dtype(options.precision, resolve_device(options.device))  # fail fast, before loading weights
    from .models.backbone import build_backbone

    backbone = build_backbone(spec, layer=layer, weights=weights)
    embedding = EmbeddingSpec(spec.name, backbone.weights_sha256, backbone.layer, backbone.dim, spec.preprocessing)
    if use_onnx:
        try:
            extractor = _onnx_from_backbone(spec, backbone, embedding, options)
            if remembers:
                from .models.bundled import bundled_weights_file
                from .runtimes.onnx_cache import remember_spec

                remember_spec(spec.name, spec.preprocessing.to_dict(), bundled_weights_file(), embedding)
            return extractor
        except OnnxExportError as e:
            if options.runtime == "onnx":
                raise OnnxExportError(f"{spec.name} cannot run on ONNX Runtime: {e}. Use --runtime torch (or auto)") from e
            logger.warning("%s runs on torch: its ONNX export failed (%s)", spec.name, e)
    return _torch(spec, backbone, options)


def extractor_for_spec(spec: dict, *, weights: str | os.PathLike | None = None, model_file: str | os.PathLike | None = None,
                       options: EmbedOptions | None = None, **changes) -> Extractor:
    """An extractor that makes vectors the way a stored spec (``EmbeddingSpec.to_dict()``) says.

    On the CPU with ONNX Runtime, an export of that very network (same weights sha256) found
    in the cache is used as it is: neither torch nor the weights file is loaded.

    Args:
        spec: the stored record; its model and layer are rebuilt.
        weights: the weights file it was made with, if not the pretrained weights.
        model_file: for a fine-tuned model (``finetuned:<digest>``), where its ``.lkft`` file is.
        options, changes: as ``create_extractor``.

    Raises:
        SpecMismatchError: the model built here makes different vectors (other weights or preprocessing).
        ModelFileError: a fine-tuned model whose file is not where the store last saw it.
    """
    options = EmbedOptions.of(options, **changes)
    stored = EmbeddingSpec.from_dict(spec)
    name = _model_name(stored, model_file)
    alpha = stored.preprocessing.alpha  # a spec written before the field existed reads as "white"
    model_spec = _with_alpha(resolve_model(name), alpha)
    if options.wants_onnx() and model_spec.preprocessing == stored.preprocessing:
        cached = _cached_onnx(model_spec, stored, options)
        if cached is not None:
            return cached
    layer = None if stored.layer == model_spec.default_layer else stored.layer
    extractor = create_extractor(name, layer=layer, weights=weights, options=options, alpha=alpha)
    differences = spec_differences(extractor.spec.to_dict(), stored.to_dict())
    if differences:
        raise SpecMismatchError(
            f"{stored.model} here makes different vectors than the ones stored ({'; '.join(differences)}): "
            f"install the same weights, or re-embed with --reset / retrain"
        )
    return extractor


def _with_alpha(spec: ModelSpec, alpha: str | None) -> ModelSpec:
    """``spec`` flattening transparency as ``alpha`` says (None: as it does)."""
    if alpha is None or alpha == spec.preprocessing.alpha:
        return spec
    return dataclasses.replace(spec, preprocessing=dataclasses.replace(spec.preprocessing, alpha=alpha))


def _model_name(stored: EmbeddingSpec, model_file) -> str:
    """The name to build a stored spec's model by: its registry or timm name, or its fine-tuned file's path."""
    if not is_finetuned_name(stored.model):
        return stored.model
    path = os.fspath(model_file) if model_file else (stored.model if is_model_file(stored.model) else None)
    wanted = EmbeddingSpec.identity(stored)["model"]
    found = None
    if path is not None:
        try:
            found = model_identity(path)
        except ModelFileError:
            found = None
    if found != wanted:
        where = (f"is no longer at {path}" if found is None else f"is not the file at {path}, which is now another model "
                 f"({found})") if path else "has no file on record"
        raise ModelFileError(f"the vectors were made with the fine-tuned model {wanted}, which {where}: "
                             f"`lookalike index DIR --model NEWPATH` records its new place (predict and evaluate "
                             f"take --model NEWPATH)")
    return path


def _onnx_from_backbone(model_spec: ModelSpec, backbone, embedding: EmbeddingSpec, options: EmbedOptions) -> Extractor:
    from .runtimes.onnx_export import cached_export
    from .runtimes.onnx_extractor import OnnxExtractor, default_threads
    from .runtimes.onnx_network import THREADS_PER_SESSION, sessions

    threads = options.threads or default_threads()
    network = cached_export(backbone, embedding, threads=min(threads, THREADS_PER_SESSION), spinning=False)
    return OnnxExtractor(model_spec, embedding, sessions(network, threads), options)


def _cached_onnx(model_spec: ModelSpec, stored: EmbeddingSpec, options: EmbedOptions) -> Extractor | None:
    """An ONNX Runtime extractor from the cached export of ``stored``, or None if there is none."""
    from .runtimes.onnx_cache import export_key, model_path
    from .runtimes.onnx_extractor import OnnxExtractor, default_threads
    from .runtimes.onnx_network import THREADS_PER_SESSION, open_network, sessions

    threads = options.threads or default_threads()
    key = export_key(stored)
    network = open_network(model_path(stored, key), key, threads=min(threads, THREADS_PER_SESSION), spinning=False)
    if network is None:
        return None
    return OnnxExtractor(model_spec, stored, sessions(network, threads), options)


def _remembered_onnx(model_spec: ModelSpec, options: EmbedOptions) -> Extractor | None:
    """The bundled model's default network from the export cache, without torch; None if it was never exported here."""
    from .models.bundled import bundled_weights_file
    from .runtimes.onnx_cache import remembered_spec

    stored = remembered_spec(model_spec.name, model_spec.preprocessing.to_dict(), bundled_weights_file())
    return _cached_onnx(model_spec, stored, options) if stored is not None else None


def _torch(model_spec: ModelSpec, backbone, options: EmbedOptions) -> Extractor:
    from .runtimes.devices import all_devices, resolve_device
    from .runtimes.torch_extractor import TorchExtractor

    resolved = resolve_device(options.device)
    return TorchExtractor(model_spec, backbone, options, device=resolved, devices=all_devices(options.device, resolved))
