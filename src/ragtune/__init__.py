"""ragtune: train a query-side adapter that makes dense retrieval better for a domain RAG system."""

__version__ = "0.1.0"
