"""Classifiers on stored embeddings: linear/RBF SVM, logistic regression, cosine kNN, nearest
centroid; labelled-set reading, reports, safe (pickle-free) model files, and ``ImageEmbedder``."""
