"""gRPC serving of exported GENet models: transport -> data plane -> preprocessing pool -> batcher -> backend."""
import runtime_env

runtime_env.configure()  # before any module of this package imports grpc, protobuf or a runtime
