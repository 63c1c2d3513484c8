"""A Triton Python-backend model that runs a bundle's ONNX encoder with ONNX Runtime on the CPU.

The ``tritonserver`` inside ``nvidia-pytriton`` has only the Python backend, so the test harness serves
each ``model.onnx`` through this file under the committed config's name, tensors and dynamic batching.
The requests of one dynamic batch run as one ONNX Runtime call, as Triton's onnxruntime backend does.
"""

import json
import os
import sys

# The stub embeds Python in isolated mode, which ignores PYTHONPATH: honour it here, before the imports.
sys.path[:0] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("LIT_TRITON_TEST_THREADS", "1"))
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.inputs = [tensor["name"] for tensor in config["input"]]
        self.outputs = [tensor["name"] for tensor in config["output"]]

    def execute(self, requests):
        per_request = [
            {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.inputs}
            for request in requests
        ]
        feeds = {name: np.concatenate([r[name] for r in per_request]) for name in self.inputs}
        results = self.session.run(self.outputs, feeds)
        responses, offset = [], 0
        for r in per_request:
            size = len(r[self.inputs[0]])
            tensors = [
                pb_utils.Tensor(name, result[offset : offset + size])
                for name, result in zip(self.outputs, results, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            offset += size
        return responses
