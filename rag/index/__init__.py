"""The index shared by ingest (writes) and queries (reads): chunks, store, embedder, lock."""
