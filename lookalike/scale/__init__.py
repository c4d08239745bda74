"""The Ray engine: featurize on a cluster into shard files, build one on-disk index from them.

Nothing in the library imports this package; ``lookalike index --engine ray`` does, lazily.
Ray itself is imported only when a run starts, so without ``pip install 'lookalike[ray]'``
the error names that command.
"""

from .pipeline import actor_resources, index_with_ray
from .session import RAY_HINT, connect, require_ray

__all__ = ["RAY_HINT", "actor_resources", "connect", "index_with_ray", "require_ray"]
