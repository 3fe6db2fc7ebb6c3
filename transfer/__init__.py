"""transfer/: bring the published UR/IR/CR representations into downstream models.

Public surface:

- :func:`join_representations`: point-in-time join of samples with the Delta tables.
- :class:`LinearAdapter`, :class:`GateAdapter`: feature-level transfer.
- :class:`CrossedEmbeddingToken`: ``Proj(z_u * z_i)`` as an input token.
- :class:`MissingDefault`: learned vector for entities absent from a table.
- :class:`IsomorphicRanker`, :func:`isomorphic_from_checkpoint`: module-level transfer.
- :class:`RetrievalAdapter`: model-level transfer, ``<A(r_u), IR(i)>``.
- :func:`publish_layer_tables`: UR/IR/CR tables per CR layer (the per-layer transfer rows).
"""

from transfer.adapters import CrossedEmbeddingToken, GateAdapter, LinearAdapter, MissingDefault
from transfer.isomorphic import IsomorphicRanker, isomorphic_from_checkpoint
from transfer.join import join_representations, table_dim
from transfer.layers import layer_rep_paths, layer_root, publish_layer_tables
from transfer.retrieval import RetrievalAdapter

__all__ = [
    "CrossedEmbeddingToken",
    "GateAdapter",
    "IsomorphicRanker",
    "LinearAdapter",
    "MissingDefault",
    "RetrievalAdapter",
    "isomorphic_from_checkpoint",
    "join_representations",
    "layer_rep_paths",
    "layer_root",
    "publish_layer_tables",
    "table_dim",
]
