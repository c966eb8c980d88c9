"""The Active Curation Engine (paper section 2.4): stage recipes into reweighted sampling manifests.

Owns the recipes (``recipe``, TOML files in ``engine/curation/recipes/``, their one-line errors in
``recipe_errors``), the pool a manifest is drawn from and its columns (``pool``), per-sample
arithmetic (``sampling``) and concept balancing (``balancing``, over ``concept_sets``), captions
(``captions``), the manifest itself (``manifest``: its steps in ``manifest_weights`` and
``manifest_assembly``, its identity in ``manifest_identity``, finding and comparing them in
``manifest_store``), trainer feedback and user boosts (``feedback``) and gap filling by
retrieval (``gaps``).

Writes ``WS/manifests/<stage>/`` (Parquet + JSON sidecar) and ``WS/boosts/<stage>/``; reads the
trainer's reports in ``WS/feedback/<stage>/``.
"""
