"""The Cross-modal Vector Engine (paper section 2.2): CLIP vectors, FAISS indexes, near-duplicates.

Owns the embedder (``embedder``; the embedded default in ``default_embedder``, any open_clip model
through ``model_specs``) and its training (``embedder_training``), the FAISS indexes over image and
caption vectors (``index``), and near-duplicate communities from the k-NN graph (``dedup``).

Writes one ``embeddings`` table per embedding model (image and caption vectors at the model's
width, ``clip_score``; ``engine.embedding_models`` records the models and the active one), the
index files in ``WS/index/<model>/`` and the table ``dedup``.
"""

import os

# Nothing in this package may reach a model hub: a model is on disk or it is an error. Set before
# transformers or huggingface_hub is imported by any module of the package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
