"""Metrics that are plain functions of embeddings, usable without the rest of the harness."""
