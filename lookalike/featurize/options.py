"""``EmbedOptions``: how images are embedded, everything but the model, in one frozen value.

The CLI builds it once from its flags (``cli/options.py``) and every caller passes it on
unchanged: ``create_extractor``, ``index_folder``, ``train``/``predict``/``evaluate``,
``advise``, ``open_store`` and the Ray engine. The defaults here are the only ones: the
CLI's option defaults are read from ``EmbedOptions()``. Importing it costs no more than
``lookalike --help`` may spend: no numpy, PIL or torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import LookalikeError
from .runtimes.devices import is_cpu

RUNTIMES = ("auto", "onnx", "torch")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEFAULT_BATCH_SIZE = 32
# Well under PIL's decompression-bomb limit (about 89.5 MP), above a 48 MP phone photo.
DEFAULT_MAX_PIXELS = 50_000_000


@dataclass(frozen=True)
class EmbedOptions:
    """How to run the network.

    Attributes:
        device: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
            ``"auto"`` and ``"cuda"`` use every visible GPU, a copy of the network on each.
        batch_size: files per ``Batch`` that ``embed_paths`` yields (and per GPU forward pass).
        workers: processes for ``embed_paths``; on ONNX Runtime each decodes its files and runs its
            own session (default one per core); on torch they decode (default: half the cores, at
            most 4, on a CPU; up to 8 for a GPU). ``0`` works in the calling process.
        threads: the ONNX Runtime network's threads (default: every core), shared out among the workers.
        precision: ``"auto"`` (fp16 autocast on CUDA, fp32 elsewhere), ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        runtime: ``"auto"`` (ONNX Runtime on the CPU in fp32 without compile, else torch), ``"onnx"``
            or ``"torch"``.
        max_pixels: larger images are recorded as failures instead of decoded.
        compile: run the network through ``torch.compile`` (a slow first batch, then faster).
        gpu_decode: decode JPEGs on the GPU (nvJPEG); default: on, where there is a CUDA GPU.
        forward_batch: images per forward pass on the CPU (default 2 on ONNX Runtime, 4 on torch).

    Raises:
        LookalikeError: a value no runtime takes (a batch size under 1, an unknown runtime or precision).
    """

    device: str | None = "auto"
    batch_size: int = DEFAULT_BATCH_SIZE
    workers: int | None = None
    threads: int | None = None
    precision: str = "auto"
    runtime: str = "auto"
    max_pixels: int = DEFAULT_MAX_PIXELS
    compile: bool = False
    gpu_decode: bool | None = None
    forward_batch: int | None = None

    def __post_init__(self):
        for name in ("batch_size", "forward_batch", "max_pixels", "threads"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise LookalikeError(f"{name} must be a whole number of at least 1, not {value!r}")
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int)
                                         or self.workers < 0):
            raise LookalikeError(f"workers must be a whole number of at least 0, not {self.workers!r}")
        if self.runtime not in RUNTIMES:
            raise LookalikeError(f"runtime must be one of {', '.join(RUNTIMES)}, not {self.runtime!r}")
        if self.precision not in PRECISIONS:
            raise LookalikeError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")

    @classmethod
    def of(cls, options: EmbedOptions | None = None, **changes) -> EmbedOptions:
        """``options`` (default ``EmbedOptions()``) with ``changes``; an unknown name is a ``TypeError`` naming the fields."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"unknown embedding option {', '.join(unknown)}: use {', '.join(f.name for f in dataclasses.fields(cls))}")
        return dataclasses.replace(options or cls(), **changes)

    def replace(self, **changes) -> EmbedOptions:
        return self.of(self, **changes)

    def changed(self) -> dict:
        """The fields that differ from the defaults, by name."""
        default = EmbedOptions()
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(default, f.name)}

    def wants_onnx(self) -> bool:
        """Whether ONNX Runtime runs the network; raises where ``runtime="onnx"`` can't honour the other options."""
        if self.runtime == "torch":
            return False
        conflicts = [what for what, bad in (
            (f"device {self.device}", not is_cpu(self.device)),
            (f"precision {self.precision}", self.precision not in ("auto", "fp32")),
            ("compile", self.compile),
            ("GPU decoding", bool(self.gpu_decode)),
        ) if bad]
        if self.runtime == "onnx" and conflicts:
            raise LookalikeError(f"the ONNX runtime runs fp32 on the CPU, not with {', '.join(conflicts)}: "
                                 f"use --runtime torch or auto")
        return not conflicts
