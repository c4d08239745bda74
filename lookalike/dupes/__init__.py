"""Duplicates you can act on: groups with a keeper chosen by rules (``groups``, ``keeper``), moves or the
trash with a write-ahead journal (``actions``, ``moves``, ``trash``, ``journal``), ``undo``, and verdicts
that stick (``verdicts``)."""
