"""Run by the tests in .venv-triton (tritonclient, unmodified): every call a stock KServe v2 client makes.

    python tests/serving/triton_check.py GRPC_ADDRESS HTTP_ADDRESS PIXELS.npy IMAGE...

Prints one JSON object: per flavour ("grpc", "http"), liveness, readiness, metadata, the classification
strings (class_count = all classes) and probabilities of the images (BYTES input), the
probabilities of the preprocessed pixels (FP32 input), and the status and message of an infer whose
`timeout` (microseconds) expires at once; and "stream": what a ModelStreamInfer stream answers to each
image as a request of its own plus one request that is not an image.
"""
import json
import sys
import threading

import numpy as np
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

MODEL = "genet_res50"


def check(module, url, images, pixels):
    """What one client flavour sees."""
    client = module.InferenceServerClient(url)
    metadata = client.get_model_metadata(MODEL, as_json=True) if module is triton_grpc \
        else client.get_model_metadata(MODEL)
    classes = int(metadata["outputs"][0]["shape"][1])
    encoded = module.InferInput("images", [len(images)], "BYTES")
    encoded.set_data_from_numpy(np.array(images, dtype=np.object_))
    ranked = client.infer(MODEL, [encoded], outputs=[module.InferRequestedOutput("probabilities",
                                                                                 class_count=classes)])
    plain = client.infer(MODEL, [encoded])
    tensor = module.InferInput("pixels", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels)
    from_pixels = client.infer(MODEL, [tensor], outputs=[module.InferRequestedOutput("probabilities")])
    try:
        client.infer(MODEL, [encoded], timeout=1)
        expired = ["OK", ""]
    except InferenceServerException as error:
        expired = [error.status(), error.message()]
    return {
        "live": client.is_server_live(), "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(MODEL), "metadata": metadata,
        "classification": [[item.decode() for item in row] for row in ranked.as_numpy("probabilities")],
        "probabilities": plain.as_numpy("probabilities").tolist(),
        "pixel_probabilities": from_pixels.as_numpy("probabilities").tolist(),
        "expired": expired,
        "model_version": plain.get_response(as_json=True)["model_version"] if module is triton_grpc
        else plain.get_response()["model_version"],
    }


def stream(url, images):
    """Requests "0", "1", ... (one image each) and "bad" (not an image) on one stream: the probabilities of
    each request id, and the error messages (tritonclient drops the id of a failed request)."""
    client = triton_grpc.InferenceServerClient(url)
    probabilities, errors = {}, []
    answered = threading.Semaphore(0)

    def callback(result, error):
        if error is not None:
            errors.append(error.message())
        else:
            probabilities[result.get_response().id] = result.as_numpy("probabilities").tolist()
        answered.release()

    client.start_stream(callback)
    for request_id, image in [(str(index), image) for index, image in enumerate(images)] + [("bad", b"no image")]:
        encoded = triton_grpc.InferInput("images", [1], "BYTES")
        encoded.set_data_from_numpy(np.array([image], dtype=np.object_))
        client.async_stream_infer(MODEL, [encoded], request_id=request_id)
    for _ in range(len(images) + 1):
        answered.acquire(timeout=60)
    client.stop_stream()
    return {"probabilities": probabilities, "errors": errors}


def main(grpc_address, http_address, pixels_path, *image_paths):
    images = [open(path, "rb").read() for path in image_paths]
    pixels = np.load(pixels_path)
    print(json.dumps({"grpc": check(triton_grpc, grpc_address, images, pixels),
                      "http": check(triton_http, http_address, images, pixels),
                      "stream": stream(grpc_address, images)}))


if __name__ == "__main__":
    main(*sys.argv[1:])
