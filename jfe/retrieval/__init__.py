"""Model-independent retrieval: embedding shards, FAISS indexes, search, TREC I/O, metrics, hard-negative mining."""
