"""flowkit_text: flows over sentence embeddings (BERT-flow style).

An exact density over a sentence encoder's embeddings (novelty scores, a Gaussian latent
for retrieval and similarity), whitening and full-covariance Gaussian baselines in the
same API, STS evaluation, and attribute steering judged by an independent probe. The
heavy pieces (sentence-transformers, scipy, scikit-learn) load when used.
"""

from .model import PRESETS, EmbeddingFlow, EmbeddingFlowConfig, preset
from .whitening import Whitening

__all__ = ["PRESETS", "EmbeddingFlow", "EmbeddingFlowConfig", "Whitening", "preset"]
