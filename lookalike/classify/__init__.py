"""Classifiers on stored vectors. (Arrives with issue 4.)"""
