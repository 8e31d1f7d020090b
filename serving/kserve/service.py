"""The Open Inference Protocol's operations on the data plane, shared by the gRPC and HTTP transports.

The served model as v2 tensors (docs/kserve.md):

| tensor | datatype | shape | |
|---|---|---|---|
| input `images` | BYTES | [N] | one encoded image file per element, preprocessed as genet.v1's Classify does |
| input `pixels` | FP32 | [N, 3, crop, crop] | already preprocessed and normalised as the manifest says |
| output `probabilities` | FP32 | [N, num_classes] | softmax probabilities |

A request has exactly one of the two inputs. An output requested with the `classification` parameter
k (Triton's classification extension) comes back as BYTES [N, k]: "score:index:label", best first.
The request parameter `timeout` (Triton's: microseconds, 0 for none) is a deadline like the transport's.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence

import numpy as np

from serving.dataplane import DataPlane, Inference, Prediction, top_predictions
from serving.errors import InvalidInput, NotFound, ServingError
from serving.kserve.tensors import BYTES, Tensor, bytes_tensor
from serving.model import ServedModel

SERVER_NAME = "genet-serving"
SERVER_VERSION = "1"
EXTENSIONS = ("classification", "binary_tensor_data")
IMAGES, PIXELS, PROBABILITIES = "images", "pixels", "probabilities"
CLASSIFICATION = "classification"
TIMEOUT = "timeout"
PLATFORMS = {"mslite": "mindspore_lite", "mindspore": "mindspore"}


class RequestedOutput(NamedTuple):
    """An output the client asked for, with its parameters (plain Python values)."""

    name: str
    parameters: Mapping[str, Any]


class InferRequest(NamedTuple):
    """A v2 inference request without its transport."""

    model_name: str
    model_version: str
    id: str
    inputs: List[Tensor]
    outputs: List[RequestedOutput]
    """Empty: every output."""
    parameters: Mapping[str, Any]
    """The request's parameters (plain Python values)."""


class InferResponse(NamedTuple):
    """A v2 inference response without its transport: outputs in the order requested."""

    model_name: str
    model_version: str
    id: str
    outputs: List[Tensor]


class KServeService:
    """Health, metadata and inference of the Open Inference Protocol for the served model."""

    def __init__(self, dataplane: DataPlane, serving: Callable[[], bool]) -> None:
        """`serving` says whether the server is ready (health SERVING: the model in service, not draining)."""
        self.dataplane = dataplane
        self._serving = serving

    def server_ready(self) -> bool:
        """Whether the server takes inference requests."""
        return self._serving()

    @staticmethod
    def server_metadata() -> Dict[str, Any]:
        """Name, version and protocol extensions of the server."""
        return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": list(EXTENSIONS)}

    def model(self, name: str, version: str) -> ServedModel:
        """The ready model version: NOT_FOUND for another model's name or an unknown version, UNAVAILABLE
        while it is not ready."""
        registry = self.dataplane.registry
        if name != registry.name:
            raise NotFound(f"unknown model {name[:64]!r}: this server serves {registry.name!r}")
        return registry.get(version)

    def repository_index(self) -> List[Dict[str, str]]:
        """Triton's repository index: every loaded version of the served model and whether it is READY."""
        registry = self.dataplane.registry
        return [{"name": registry.name, "version": version, "state": _state(registry, version)}
                for version in registry.versions()]

    def model_metadata(self, name: str, version: str) -> Dict[str, Any]:
        """The model's name, loaded versions, platform and tensors (docs/kserve.md)."""
        model = self.model(name, version)
        crop = list(model.input_shape)
        return {
            "name": model.name, "versions": self.dataplane.registry.versions(),
            "platform": PLATFORMS.get(self.dataplane.settings.backend, self.dataplane.settings.backend),
            "inputs": [{"name": IMAGES, "datatype": BYTES, "shape": [-1]},
                       {"name": PIXELS, "datatype": "FP32", "shape": [-1] + crop}],
            "outputs": [{"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, len(model.labels)]}],
        }

    async def infer(self, request: InferRequest, deadline: Optional[float]) -> InferResponse:
        """Run the request's one input through the data plane; outputs as requested. `deadline` is the
        transport's (time.monotonic() or None); the `timeout` parameter's, if earlier, replaces it."""
        deadline = _earliest(deadline, deadline_after(_timeout_s(request.parameters)))
        self.model(request.model_name, request.model_version)  # NOT_FOUND before looking at the tensors
        tensor = _the_input(request.inputs)
        class_counts = [_class_count(output) for output in request.outputs]
        if tensor.name == IMAGES:
            inference = await self.dataplane.infer_images(list(tensor.data), request.model_version, deadline)
        else:
            inference = await self.dataplane.infer_tensor(tensor.data, request.model_version, deadline)
        outputs = [_output(inference, k) for k in class_counts or [0]]
        return InferResponse(inference.model_name, inference.model_version, request.id, outputs)


def deadline_after(timeout_s: Optional[float]) -> Optional[float]:
    """A time.monotonic() deadline `timeout_s` from now, or None."""
    return None if timeout_s is None else time.monotonic() + timeout_s


def _earliest(*deadlines: Optional[float]) -> Optional[float]:
    """The earliest of the deadlines that are set, or None."""
    return min((deadline for deadline in deadlines if deadline is not None), default=None)


def _timeout_s(parameters: Mapping[str, Any]) -> Optional[float]:
    """Triton's `timeout` request parameter (integer microseconds; absent or 0: none) in seconds."""
    timeout = parameters.get(TIMEOUT, 0)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
        raise InvalidInput(f"request parameter '{TIMEOUT}' must be a non-negative integer number of "
                           f"microseconds, got {timeout!r:.32}")
    return timeout / 1e6 if timeout else None


def _state(registry, version: str) -> str:
    try:
        registry.get(version)
    except ServingError:
        return "UNAVAILABLE"
    return "READY"


def _the_input(inputs: Sequence[Tensor]) -> Tensor:
    """The request's single input, checked against the model's two (name, datatype, rank)."""
    if len(inputs) != 1 or inputs[0].name not in (IMAGES, PIXELS):
        raise InvalidInput(f"send exactly one input: '{IMAGES}' (BYTES [N], encoded image files) "
                           f"or '{PIXELS}' (FP32 [N, 3, H, W], preprocessed); "
                           f"got {[tensor.name[:64] for tensor in inputs[:4]]}")
    tensor = inputs[0]
    expected = BYTES if tensor.name == IMAGES else "FP32"
    if tensor.datatype != expected:
        raise InvalidInput(f"input '{tensor.name}' must be {expected}, got {tensor.datatype[:16]}")
    if tensor.name == IMAGES and len(tensor.shape) != 1:
        raise InvalidInput(f"input '{IMAGES}' must have shape [N], got {list(tensor.shape)}")
    return tensor


def _class_count(output: RequestedOutput) -> int:
    """The requested output's classification count (0: the probabilities themselves)."""
    if output.name != PROBABILITIES:
        raise InvalidInput(f"unknown output '{output.name[:64]}': the model has one output, '{PROBABILITIES}'")
    count = output.parameters.get(CLASSIFICATION, 0)
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise InvalidInput(f"output parameter '{CLASSIFICATION}' must be a non-negative integer, got {count!r}")
    return count


def _output(inference: Inference, class_count: int) -> Tensor:
    """The probabilities, or their top `class_count` as "score:index:label" strings per image."""
    if class_count == 0:
        probabilities = inference.probabilities.astype(np.float32)
        return Tensor(PROBABILITIES, "FP32", probabilities.shape, probabilities)
    ranked = top_predictions(inference.probabilities, class_count, inference.labels)
    return bytes_tensor(PROBABILITIES, [[_classification(p) for p in image] for image in ranked])


def _classification(prediction: Prediction) -> bytes:
    """Triton's "score:index:label"; the score as the shortest string of its float32 (as genet.v1 sends it)."""
    return f"{np.float32(prediction.score)!s}:{prediction.class_id}:{prediction.label}".encode("utf-8")
