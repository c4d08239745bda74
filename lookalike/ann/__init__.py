"""The FAISS toolbox: choosing and building indexes, searching them, their files, and near-duplicate
groups from a kNN graph. Arrays and ids in, ``(D, I)`` out; it imports nothing of ``store``."""
