# Every target installs what it needs first (torch==2.13.0 is pinned in
# pyproject.toml: the CPU build where only that is offered, CUDA elsewhere).
#
# Which Python: the active virtualenv (or conda env) when make runs inside
# one; otherwise a project virtualenv in .venv, made on first use with
# $(BASE_PYTHON). System Pythons are often "externally managed" and refuse
# pip installs, so we never install into one.
BASE_PYTHON ?= python3
VENV        := .venv

ACTIVE_ENV := $(shell $(BASE_PYTHON) -c 'import os, sys; print(int(sys.prefix != sys.base_prefix or os.environ.get("CONDA_PREFIX") == sys.prefix))' 2>/dev/null)
ifeq ($(ACTIVE_ENV),1)
PYTHON ?= $(BASE_PYTHON)
else
PYTHON ?= $(VENV)/bin/python
endif

# The install stamp is keyed by the interpreter (where it lives and its
# version), so switching to another Python or venv installs into that one.
PYKEY := $(shell $(BASE_PYTHON) -c 'import hashlib, os, shutil, sys; exe = os.path.abspath(shutil.which(sys.argv[1]) or sys.argv[1]); print(hashlib.sha1((exe + sys.version).encode()).hexdigest()[:12])' "$(PYTHON)" 2>/dev/null)
STAMP := .make/installed-$(PYKEY)

MODELS := voc-fcn32s voc-fcn16s voc-fcn8s voc-fcn8s-atonce voc-fcn-alexnet \
          nyud-fcn32s-color nyud-fcn32s-hha nyud-fcn32s-color-d nyud-fcn32s-color-hha \
          siftflow-fcn32s siftflow-fcn16s siftflow-fcn8s \
          pascalcontext-fcn32s pascalcontext-fcn16s pascalcontext-fcn8s \
          voc-fcn-googlenet voc-fcn32s-fixed
BASE_NETS := vgg16 vgg16fcn alexnet alexnetfcn googlenet googlenetfcn

.PHONY: install test demo demo-time demo-base nets proto bench table1 pycaffe-check fuzz gpu-check compare-caffe pycaffe-backend-check which-python $(MODELS) $(BASE_NETS)

install: $(STAMP)

$(VENV)/bin/python:
	@$(BASE_PYTHON) -m venv $(VENV) || { \
	  echo "error: '$(BASE_PYTHON) -m venv' failed; on Debian/Ubuntu install the venv module (apt install python3-venv), or activate a virtualenv of your own and run make again" >&2; \
	  rm -rf $(VENV); exit 1; }
	@$(VENV)/bin/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(if $(filter 1,$(ACTIVE_ENV)),,$(VENV)/bin/python)
	@echo "installing the project and its dependencies for $(PYTHON) (about 1.5 GB with torch; a minute or two)"
	$(PYTHON) -m pip install -q -e ".[test,export]"
	@mkdir -p $(dir $@) && $(PYTHON) -c 'import sys; print(sys.executable, sys.version.split()[0])' > $@

# Which interpreter the targets use.
which-python:
	@$(if $(filter 1,$(ACTIVE_ENV)),$(PYTHON) -c 'import sys; print(sys.executable)',echo $(abspath $(PYTHON)))

test: $(STAMP)
	$(PYTHON) -m pytest -q

# The main job on the built-in default: synthetic VOC-layout data, narrow
# reference nets, staged 32s -> 16s -> 8s on CPU; results under demo/.
demo: $(STAMP)
	$(PYTHON) -m solvers.demo

# The full demo twice in fresh processes: wall and CPU time, same results.
demo-time: $(STAMP)
	$(PYTHON) -m bench.demo_time --runs 2

# Remake the demo's shipped base net (solvers/pretrained/, about 10 minutes
# on one thread); the demo starts from it as the release starts from VGG16.
demo-base: $(STAMP)
	$(PYTHON) -m solvers.demo_base

# All reference nets and base nets under models/<name>/.
nets: $(STAMP)
	$(PYTHON) -m netspec --out models all

# `make voc-fcn8s` writes models/voc-fcn8s/{train,val,deploy,solver}.prototxt.
$(MODELS) $(BASE_NETS): $(STAMP)
	$(PYTHON) -m netspec --out models $@

# Regenerate torchcaffe/proto/caffe_pb2.py from caffe.proto with the pinned
# generator (grpcio-tools bundles protoc).
proto: $(STAMP)
	$(PYTHON) -m pip install -q "grpcio-tools==1.85.1"
	$(PYTHON) -m grpc_tools.protoc -I torchcaffe/proto --python_out=torchcaffe/proto torchcaffe/proto/caffe.proto

# The paper's Table 1 architecture columns, computed from the emitted nets.
table1: $(STAMP)
	$(PYTHON) -m netspec.table1 --check

# BVLC's pycaffe tests and the FCN release's scripts through the import caffe
# alias: make pycaffe-check BVLC_CAFFE=<BVLC/caffe checkout> FCN_RELEASE=<fcn.berkeleyvision.org checkout>
pycaffe-check: $(STAMP)
	BVLC_CAFFE=$(BVLC_CAFFE) FCN_RELEASE=$(FCN_RELEASE) $(PYTHON) -m pytest -q tests/test_bvlc_pycaffe_suite.py tests/test_fcn_release_scripts.py

# The reduced demo on BVLC Caffe, on torchcaffe, and on torchcaffe from a base
# net one ulp off, one table: make compare-caffe BVLC_CAFFE=<built BVLC/caffe checkout>
compare-caffe: $(STAMP)
	$(if $(BVLC_CAFFE),$(PYTHON) -m pip install -q -e ".[pycaffe]")
	$(PYTHON) -m solvers.compare_caffe $(if $(BVLC_CAFFE),--caffe-pythonpath $(BVLC_CAFFE)/python)

# Every FCN entry point on BVLC Caffe: make pycaffe-backend-check BVLC_CAFFE=<built checkout>
pycaffe-backend-check: $(STAMP)
	$(if $(BVLC_CAFFE),$(PYTHON) -m pip install -q -e ".[pycaffe]")
	FCN_PYCAFFE_PYTHONPATH=$(if $(BVLC_CAFFE),$(BVLC_CAFFE)/python) $(PYTHON) -m pytest -q tests/test_pycaffe_backend.py

# Mutation fuzzing of every reader: 10,000 cases per format and a table of
# outcomes (about 8 minutes on 2 cores); exits 1 on any crash or hang.
fuzz: $(STAMP)
	$(PYTHON) -m tests.fuzz --cases 10000

# Speed tables; against BVLC Caffe too when given its Python and checkout:
# make bench CAFFE_PYTHON=<caffe venv>/bin/python CAFFE_ROOT=<BVLC/caffe checkout>
bench: $(STAMP)
	$(PYTHON) -m bench $(if $(CAFFE_PYTHON),--caffe-python $(CAFFE_PYTHON)) $(if $(CAFFE_ROOT),--caffe-root $(CAFFE_ROOT))

# On a machine with NVIDIA GPUs (a few minutes): the golden cases on CUDA, the
# bench's CUDA rows, a 50-iteration staged run, 2-GPU equivalence with 2+ GPUs.
# Without CUDA it says so in one line and exits 0.
gpu-check: $(STAMP)
	$(PYTHON) -m bench.gpu_check
