#!/bin/sh
# Regenerate caffe_pb2.py from caffe.proto with the pinned grpcio-tools.
# Run from the repository root.
set -e
cd "$(dirname "$0")/../.."
python -m grpc_tools.protoc -I torchcaffe/proto --python_out=torchcaffe/proto torchcaffe/proto/caffe.proto
