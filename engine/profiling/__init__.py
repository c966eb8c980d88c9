"""The Data Profiling Engine (paper section 2.1): every pair read, judged and measured.

Owns the sources (``source`` and one module per kind, sharing ``records``), the shard plan
(``plan``), ingest (``ingest``: a ``samples`` row per record, rejects kept with a reason), the cheap
image and caption signals (``profile``), OCR (``ocr`` and its ``ocr_*`` modules) and the NSFW score
(``safety``).

Writes the tables ``samples``, ``signals``, ``ocr`` and ``safety`` (columns in ``engine.schema``)
and each source's plan in ``WS/_plans/``.
"""
