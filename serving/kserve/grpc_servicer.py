"""inference.GRPCInferenceService (KServe v2 over gRPC) on the KServe service.

Inputs come as raw contents (`raw_input_contents`, as tritonclient sends) or typed `contents`; the
response uses the form the request used. Errors and metrics go through genet.v1's `rpc_method`.
"""
from __future__ import annotations

from typing import Any, Dict

from inference import grpc_predict_v2_pb2 as pb, grpc_predict_v2_pb2_grpc
from serving.errors import InvalidInput, ServingError
from serving.kserve import tensors
from serving.kserve.service import InferRequest, KServeService, RequestedOutput
from serving.kserve.tensors import BYTES, Tensor
from serving.metrics import ServingMetrics
from serving.servicers import deadline_of, recorded_outcome, rpc_method
from serving.streams import answer_stream

KSERVE_SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
# Probes of the server as a whole, open without a token like grpc.health.v1 (and /v2/health/* over HTTP).
OPEN_METHODS = tuple(f"/{KSERVE_SERVICE}/{method}" for method in ("ServerLive", "ServerReady"))
# InferTensorContents field of each datatype's typed values.
CONTENTS_FIELDS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
                   "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
                   "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
                   "FP32": "fp32_contents", "FP64": "fp64_contents", BYTES: "bytes_contents"}


class KServeServicer(grpc_predict_v2_pb2_grpc.GRPCInferenceServiceServicer):
    """The required RPCs of the Open Inference Protocol, and Triton's ModelStreamInfer."""

    def __init__(self, service: KServeService, metrics: ServingMetrics) -> None:
        self.service = service
        self.metrics = metrics

    @rpc_method
    async def ServerLive(self, request, context):
        """Live whenever it answers."""
        return pb.ServerLiveResponse(live=True)

    @rpc_method
    async def ServerReady(self, request, context):
        """Ready while the server's health is SERVING."""
        return pb.ServerReadyResponse(ready=self.service.server_ready())

    @rpc_method
    async def ModelReady(self, request, context):
        """Whether the model version is ready; NOT_FOUND for an unknown model or version."""
        try:
            self.service.model(request.name, request.version)
        except ServingError as error:
            if error.code == "NOT_FOUND":
                raise
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    @rpc_method
    async def ServerMetadata(self, request, context):
        """Name, version and extensions."""
        return pb.ServerMetadataResponse(**self.service.server_metadata())

    @rpc_method
    async def ModelMetadata(self, request, context):
        """The model's versions, platform and tensors."""
        metadata = self.service.model_metadata(request.name, request.version)
        response = pb.ModelMetadataResponse(name=metadata["name"], versions=metadata["versions"],
                                            platform=metadata["platform"])
        for field in ("inputs", "outputs"):
            getattr(response, field).extend(pb.ModelMetadataResponse.TensorMetadata(**spec) for spec in metadata[field])
        return response

    @rpc_method
    async def ModelInfer(self, request, context):
        """Classify the request's images (encoded files or preprocessed pixels)."""
        return await self._infer(request, context)

    async def ModelStreamInfer(self, request_iterator, context):
        """ModelInfer on every request of the stream as it comes (Triton's extension); one response each,
        as each finishes. A failed request's response has error_message "<status code name>: <message>" and
        an infer_response with only the model and the request's id."""
        async def answer(request):
            response, error = await recorded_outcome(self.metrics, "ModelStreamInfer",
                                                     self._infer(request, context), context)
            if error is None:
                return pb.ModelStreamInferResponse(infer_response=response)
            code, message = error
            return pb.ModelStreamInferResponse(error_message=f"{code}: {message}", infer_response=pb.ModelInferResponse(
                model_name=request.model_name, model_version=request.model_version, id=request.id))

        await answer_stream(context, answer, _batch_size, self.service.dataplane)

    async def _infer(self, request, context) -> pb.ModelInferResponse:
        raw = len(request.raw_input_contents) > 0
        result = await self.service.infer(_infer_request(request), deadline_of(context))
        response = pb.ModelInferResponse(model_name=result.model_name, model_version=result.model_version,
                                         id=result.id)
        for tensor in result.outputs:
            output = response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
            if raw:
                response.raw_output_contents.append(tensors.to_raw(tensor))
            else:
                getattr(output.contents, CONTENTS_FIELDS[tensor.datatype]).extend(tensors.to_values(tensor))
        return response


def _batch_size(request: pb.ModelInferRequest) -> int:
    """The images of a request as its first input's leading dimension says (1 when it says nothing usable)."""
    shape = request.inputs[0].shape if request.inputs else ()
    return max(1, shape[0]) if shape else 1


def _infer_request(request: pb.ModelInferRequest) -> InferRequest:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs")
    inputs = [_tensor(tensor, raw[index] if raw else None) for index, tensor in enumerate(request.inputs)]
    outputs = [RequestedOutput(output.name, _parameters(output.parameters)) for output in request.outputs]
    return InferRequest(request.model_name, request.model_version, request.id, inputs, outputs,
                        _parameters(request.parameters))


def _tensor(tensor: pb.ModelInferRequest.InferInputTensor, raw) -> Tensor:
    shape = list(tensor.shape)
    if raw is not None:
        if tensor.HasField("contents"):
            raise InvalidInput(f"input '{tensor.name}': give raw_input_contents or contents, not both")
        return tensors.from_raw(tensor.name, tensor.datatype, shape, raw)
    field = CONTENTS_FIELDS.get(tensor.datatype)
    if field is None:
        raise InvalidInput(f"input '{tensor.name}': datatype {tensor.datatype[:16]!r} has no typed contents; "
                           "send raw_input_contents")
    return tensors.from_values(tensor.name, tensor.datatype, shape, list(getattr(tensor.contents, field)))


def _parameters(parameters) -> Dict[str, Any]:
    """InferParameter map -> plain values."""
    values: Dict[str, Any] = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        values[key] = None if choice is None else getattr(parameter, choice)
    return values
