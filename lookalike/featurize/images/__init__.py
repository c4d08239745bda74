"""Image files: found under a folder (``discover``), read in the formats ``formats`` lists (``decode``, ``jpeg``,
``jxl``, ``raw``), transparency flattened (``transparency``), preprocessed into uint8 pixels (``preprocess``),
batched (``batches``, ``reader``), and why one failed (``failures``)."""
