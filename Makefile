# Every target installs what it needs first (torch==2.13.0 is pinned in
# pyproject.toml: the CPU build where only that is offered, CUDA elsewhere).
PYTHON ?= python3
STAMP  := .make/installed

MODELS := voc-fcn32s voc-fcn16s voc-fcn8s voc-fcn8s-atonce voc-fcn-alexnet \
          nyud-fcn32s-color nyud-fcn32s-hha nyud-fcn32s-color-d nyud-fcn32s-color-hha \
          siftflow-fcn32s siftflow-fcn16s siftflow-fcn8s \
          pascalcontext-fcn32s pascalcontext-fcn16s pascalcontext-fcn8s
BASE_NETS := vgg16 vgg16fcn alexnet alexnetfcn

.PHONY: install test demo nets proto bench $(MODELS) $(BASE_NETS)

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m pip install -q -e ".[test,export]"
	@mkdir -p $(dir $@) && touch $@

test: $(STAMP)
	$(PYTHON) -m pytest -q

# The main job on the built-in default: synthetic VOC-layout data, narrow
# reference nets, staged 32s -> 16s -> 8s on CPU; results under demo/.
demo: $(STAMP)
	$(PYTHON) -m solvers.demo

# All reference nets and base nets under models/<name>/.
nets: $(STAMP)
	$(PYTHON) -m netspec --out models all

# `make voc-fcn8s` writes models/voc-fcn8s/{train,val,deploy,solver}.prototxt.
$(MODELS) $(BASE_NETS): $(STAMP)
	$(PYTHON) -m netspec --out models $@

# Regenerate torchcaffe/proto/caffe_pb2.py from caffe.proto with the pinned
# generator (grpcio-tools bundles protoc).
proto:
	$(PYTHON) -m pip install -q "grpcio-tools==1.85.1"
	$(PYTHON) -m grpc_tools.protoc -I torchcaffe/proto --python_out=torchcaffe/proto torchcaffe/proto/caffe.proto

bench: $(STAMP)
	$(PYTHON) -m bench
