"""Image files: found under a folder (``discover``), decoded (``decode``, ``jpeg``), preprocessed
into uint8 pixels (``preprocess``), batched (``batches``, ``reader``), and why one failed (``failures``)."""
