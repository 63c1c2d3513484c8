"""Image and text encoders behind one small interface, so one evaluation scores a checkpoint (torch) and an
exported bundle (its ONNX files, exactly as served) alike."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image

from lit_bundle.preprocess import preprocess_image
from lit_bundle.repository import Bundle
from training.export import image_batch, token_batch
from training.model import LiTModel


class Encoders(Protocol):
    """``encode_images`` / ``encode_texts`` -> (N, D) L2-normalised float32 CPU tensors."""

    def encode_images(self, images: list[Image.Image]) -> torch.Tensor: ...

    def encode_texts(self, texts: list[str]) -> torch.Tensor: ...


class TorchEncoders:
    """A LiT model from a checkpoint, fed exactly the serving preprocessing."""

    def __init__(self, model: LiTModel) -> None:
        self.model = model.eval()
        self.device = next(model.parameters()).device

    @torch.no_grad()
    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        spec = self.model.image_tower.preprocess
        pixels = torch.from_numpy(np.stack([preprocess_image(image, spec) for image in images]))
        return self.model.encode_image(pixels.to(self.device)).float().cpu()

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        tokens = self.model.text_tower.tokenize(texts)
        ids, mask = tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device)
        return self.model.encode_text(ids, mask).float().cpu()


class BundleEncoders:
    """A bundle's ONNX encoders on ONNX Runtime's CPU provider, with the gateway's tokenizer padding."""

    def __init__(self, bundle: Bundle) -> None:
        providers = ["CPUExecutionProvider"]
        self.manifest = bundle.manifest
        self.image_session = ort.InferenceSession(str(bundle.image_model), providers=providers)
        self.text_session = ort.InferenceSession(str(bundle.text_model), providers=providers)
        self.tokenizer = bundle.load_tokenizer()
        self.pixel_input = self.manifest.image_encoder.inputs[0].name

    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        pixels = image_batch(images, self.manifest.preprocess)
        return torch.from_numpy(self.image_session.run(None, {self.pixel_input: pixels})[0]).float()

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        return torch.from_numpy(self.text_session.run(None, token_batch(self.tokenizer, texts))[0]).float()
