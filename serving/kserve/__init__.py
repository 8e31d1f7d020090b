"""The Open Inference Protocol (KServe v2) over gRPC (`grpc_servicer`) and HTTP/REST (`http`).

Both transports convert their wire form to the transport-free tensors of `tensors` and call one
`service.KServeService`, which runs on the same data plane as genet.v1. docs/kserve.md describes the
model as v2 tensors.
"""
