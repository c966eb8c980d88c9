"""zcurate's engine: the Z-Image paper's four data engines (arXiv 2511.22699, section 2) and a shared core.

The four engines, one package each, in the order a sample meets them:

* ``engine.profiling``: the Data Profiling Engine. Sources, ingest, the shard plan, cheap image and
  caption signals, OCR and the NSFW score (tables ``samples``, ``signals``, ``ocr``, ``safety``).
* ``engine.vectors``: the Cross-modal Vector Engine. The CLIP embedder and its training, the FAISS
  indexes, near-duplicate communities (``embeddings``, ``WS/index/``, ``dedup``).
* ``engine.graph``: the World Knowledge Topological Graph. WordNet, the concept graph, tagging, the
  concept text index (``concepts``, ``concept_edges``, ``concept_ancestors``, ``tags``).
* ``engine.curation``: the Active Curation Engine. Recipes, sampling and balancing, manifests,
  trainer feedback and boosts, gap filling (``WS/manifests/``, ``WS/boosts/``).

The shared core beside them: ``engine.schema`` (every column, once), ``engine.workspace`` (every
path, once) and ``engine.catalog`` (DuckDB views and queries over the tables). ``engine.s3dit`` is
the bundled trainer that consumes manifests and reports back. Nothing in ``engine`` imports
``pipelines``, ``api`` or ``cli``: those are built on it.
"""
