"""The inference gateway: HTTP API over an exported LiT bundle, on numpy, Pillow and onnxruntime; no torch."""
