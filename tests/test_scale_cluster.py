"""The Ray engine on a 2-node ray.cluster_utils.Cluster: the local engine's results, rows from both nodes."""

import pytest
from conftest import make_corpus
from ray_helpers import NO_PROGRESS_S, assert_same_as_local, shard_rows

from lookalike.featurize.options import EmbedOptions
from lookalike.indexing import index_folder
from lookalike.scale import index_with_ray
from lookalike.store.store import Store

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def test_two_nodes_give_the_local_engines_results_with_rows_embedded_on_both(ray_cluster, tmp_path, unreadable_as_root):
    ray, _ = ray_cluster
    root = tmp_path / "corpus"
    make_corpus(root)
    index_folder(root, store=tmp_path / "local", options=EmbedOptions(device="cpu", workers=0))
    nodes = []
    summary = index_with_ray(root, store=tmp_path / "ray", rows_per_shard=1, no_progress_timeout_s=NO_PROGRESS_S,
                             options=EmbedOptions(device="cpu", batch_size=1),
                             on_commit=lambda batch: nodes.extend(batch["embed_node"]))
    assert (summary.added, summary.embedded, summary.failed) == (17, 12, 5)
    assert_same_as_local(tmp_path / "local", tmp_path / "ray")
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(alive) == 2 and set(nodes) == alive
    assert shard_rows(tmp_path / "ray") == 12 and Store.open(tmp_path / "ray").check().ok
