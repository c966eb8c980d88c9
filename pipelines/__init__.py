"""Ray batch jobs that run the engines over a dataset: the curate job and the backfill of one stage.

``curate`` (the job: plan, shards, duplicates, then the global steps), ``backfill`` (one image stage
for the shards that lack it), ``runner`` (the one read -> ingest -> stages loop both share),
``stages`` (profile, OCR, embedding, safety: one protocol), ``runtime`` (Ray: a local Ray or a
cluster, an actor pool with bounded retries) and ``progress`` (a bar or a line per step). Stages
call ``engine``; there is no model code here.
"""
