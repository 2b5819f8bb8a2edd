"""Embedding models: sentence-transformers config, pooling, ragged attention, the batching engine."""
