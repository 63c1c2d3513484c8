"""Triton's ``ModelConfig`` protobuf (``config.pbtxt``'s schema), loaded without the gRPC client around it."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

MODEL_CONFIG_PB2 = "tritonclient.grpc.model_config_pb2"


def model_config_pb2() -> Any:
    """Triton's ``ModelConfig`` protobuf module; a missing one is always an ImportError.

    Loaded from its file, without running ``tritonclient.grpc``'s ``__init__``: that imports the whole gRPC
    client (grpcio), which parsing a config needs nothing of, and the gateway, which reads its configs while
    it runs, would carry it whether or not it serves gRPC. Registered under its own name, so a later
    ``import tritonclient.grpc`` reuses it (its descriptors exist once).
    """
    if MODEL_CONFIG_PB2 in sys.modules:  # imported already, or None: known missing
        return importlib.import_module(MODEL_CONFIG_PB2)
    package = importlib.util.find_spec("tritonclient")  # finds the package without importing it
    folders = list(package.submodule_search_locations or []) if package is not None else []
    source = Path(folders[0], "grpc", "model_config_pb2.py") if folders else None
    spec = importlib.util.spec_from_file_location(MODEL_CONFIG_PB2, source) if source else None
    if spec is None or spec.loader is None or source is None or not source.is_file():
        raise ModuleNotFoundError(f"No module named {MODEL_CONFIG_PB2!r}", name=MODEL_CONFIG_PB2)
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODEL_CONFIG_PB2] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[MODEL_CONFIG_PB2]
        raise
    return module
