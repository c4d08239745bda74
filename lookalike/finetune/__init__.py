"""Fine-tuning the network itself (heads, layer-wise rates, checkpoints, the .lkft file), and
``advise``, which measures the recipes on the user's labels. Uses featurize; featurize never imports it."""

from .recipe import FinetuneConfig
from .run import FinetuneResult, finetune, finetune_images

__all__ = ["FinetuneConfig", "FinetuneResult", "finetune", "finetune_images"]
