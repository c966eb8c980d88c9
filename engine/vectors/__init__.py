"""The Cross-modal Vector Engine (paper section 2.2): CLIP vectors, FAISS indexes, near-duplicates.

Owns the embedder (``embedder``; the embedded default in ``default_embedder``, any open_clip model
through ``model_specs``) and its training (``embedder_training``), the FAISS indexes over image and
caption vectors (``index``), and near-duplicate communities from the k-NN graph (``dedup``).

Writes the table ``embeddings`` (image and caption vectors, ``clip_score``), the index files in
``WS/index/`` and the table ``dedup``.
"""

import os

# Nothing in this package may reach a model hub: a model is on disk or it is an error. Set before
# transformers or huggingface_hub is imported by any module of the package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
