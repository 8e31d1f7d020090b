"""gRPC serving of exported GENet models: transport -> data plane -> preprocessing pool -> batcher -> backend."""
import os

# Must precede the first protobuf import: `import mindspore` (the mindspore backend) would
# otherwise switch protobuf, and with it every gRPC message, to the slow pure-Python backend.
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "upb")
