"""The World Knowledge Topological Graph (paper section 2.3): concepts, and samples tagged with them.

Owns the WordNet data (``wordnet``, converted once into ``engine/graph/data/``), the concept graph
with its pruning and rollups (``concept_graph``) and the questions asked of it
(``concept_queries``), tagging (``tagging``, with ``matching`` for text, ``mining`` for new
concepts, ``zero_shot`` for CLIP tags) and the concept text index (``concept_index``).

Writes the tables ``tags``, ``concepts``, ``concept_edges`` and ``concept_ancestors``.
"""
