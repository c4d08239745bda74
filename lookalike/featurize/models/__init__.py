"""Models: the registry (pure data), ``resolve`` (the one place a model name is read), weights, the
networks built headless (``backbone``), fine-tuned ``.lkft`` files, and ``EmbeddingSpec``."""
