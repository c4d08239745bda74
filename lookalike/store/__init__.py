"""The crash-safe store: a manifest, a SQLite catalog (the truth), append-only vector files and a
FAISS index kept in step with them. Imports ``ann`` for the index, never ``featurize``."""
