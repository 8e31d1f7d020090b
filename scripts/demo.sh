#!/usr/bin/env bash
# `make demo`: the whole product end to end on the data it builds itself.
# setup -> data -> train (demo config) -> export -> serve -> classify -> bench.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-8500}
HTTP_PORT=${HTTP_PORT:-8000}
METRICS_PORT=${METRICS_PORT:-8501}
step() { printf '\n=== %s (%s)\n' "$1" "$(date +%H:%M:%S)"; }

mkdir -p reports
step "1/6 setup: .venv (MindSpore) and .venv-lite (MindSpore Lite)"
make --no-print-directory setup

step "2/6 data: data/fmnist (Fashion-MNIST as JPEG folders) and data/photos"
make --no-print-directory data

step "3/6 train: training/configs/demo.yaml"
make --no-print-directory train | tee reports/demo-train.log
checkpoint=$(tail -n 1 reports/demo-train.log)

step "4/6 export: $checkpoint -> models/"
make --no-print-directory export CKPT="$checkpoint" | tee reports/demo-export.log
version_dir=$(tail -n 1 reports/demo-export.log)

step "5/6 serve on 127.0.0.1:$PORT (gRPC) and :$HTTP_PORT (HTTP) and classify photos and Fashion-MNIST images"
make --no-print-directory browser
.venv/bin/python -m serving --model-repository models --port "$PORT" --http-port "$HTTP_PORT" \
  --metrics-port "$METRICS_PORT" > reports/demo-server.log 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null || true' EXIT
fmnist_samples=""
for class in data/fmnist/val/*/; do  # the first image of each class (a glob: `ls | head` dies of SIGPIPE)
  class_images=("$class"*.JPEG)
  fmnist_samples+="${class_images[0]} "
done
make --no-print-directory classify TARGET="127.0.0.1:$PORT" IMAGES="data/photos/*.jpg $fmnist_samples" \
  ARGS="--top-k 3 --wait-ready 300"
echo "KServe v2 over HTTP, the README's curl line:"
curl -s --data-binary @data/photos/chelsea.jpg "http://127.0.0.1:$HTTP_PORT/v2/models/genet_res50/classify"
echo
.venv/bin/python -m clients.browser --url "http://127.0.0.1:$HTTP_PORT" --screenshot reports/page.png data/photos/*.jpg
kill -TERM "$server"
wait "$server"
trap - EXIT

step "6/6 bench: Lite and OpenVINO servers side by side, dynamic batching vs max batch 1, accuracy on data/fmnist/val, offline baselines"
make --no-print-directory bench

step "done: where everything went"
cat <<EOT
  data          data/fmnist/{train,val}, data/photos
  training run  $(readlink -f runs/latest) (config.yaml, log.jsonl, checkpoints)
  checkpoint    $checkpoint (+ .eval.json)
  model         $version_dir (manifest.json, model.ms, model.onnx, model.mindir, labels.txt)
  server log    reports/demo-server.log
  browser page  reports/page.png (live: make serve, then open http://127.0.0.1:$HTTP_PORT/)
  benchmark     reports/benchmark.json, reports/benchmark.csv, reports/benchmark.png
EOT
