"""The contract between training and serving. Imports no torch."""

from lit_bundle.preprocess import PreprocessSpec, preprocess_image

__all__ = ["PreprocessSpec", "preprocess_image"]
