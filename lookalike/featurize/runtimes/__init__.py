"""What runs the network: ONNX Runtime (network, extractor, export, cache, worker pool) and torch
(extractor, lanes), and the choice of device."""
