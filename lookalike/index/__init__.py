"""Vectors and keys in, neighbours out; knows nothing of torch. (The store and search arrive with issue 3.)"""
