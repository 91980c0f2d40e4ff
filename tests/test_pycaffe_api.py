"""pycaffe's Net / Blob / Solver / Layer surface, each behaviour checked
against hand-derived values: live arrays across forward and backward,
forward/backward(end=) keys, repeated backward, Caffe's reshape capacity,
ids and loss weights, callbacks, HDF5 weights, Python layers with params,
solver lr / apply_update / share_weights, and the top-level names."""
import textwrap

import numpy as np
import pytest

import torchcaffe as caffe
from torchcaffe.prototxt import parse_net_text

X = np.array([[1, -2, 3], [-1, 0.5, 2]], np.float32)
W = np.array([[1, 0, -1], [2, 1, 0]], np.float32)
INPUT = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }\n'
# a layer and its top with different names, a loss on top
IP = ('layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc_out" '
      'inner_product_param { num_output: 2 bias_term: false } }\n')
LOSS = 'layer { name: "loss" type: "Flatten" bottom: "fc_out" top: "loss" loss_weight: 2 }\n'


def fc_net(extra=""):
    net = caffe.Net(parse_net_text("force_backward: true\n" + INPUT + IP + extra),
                    phase=caffe.TRAIN)
    net.params["fc"][0].data[...] = W
    return net


def test_forward_and_backward_end_answer_with_the_layers_tops_and_bottoms():
    net = fc_net(LOSS)
    out = net.forward(data=X, end="fc")
    assert set(out) == {"fc_out"}
    np.testing.assert_allclose(out["fc_out"], X @ W.T)
    net.forward(data=X)
    grads = net.backward(end="fc")
    assert set(grads) == {"data"}
    # L = 2 sum(X W^T): dL/dX = 2 * colsum(W) per row
    np.testing.assert_allclose(grads["data"], np.tile(2 * W.sum(0), (2, 1)))


def test_arrays_held_across_forward_and_backward_are_live():
    net = fc_net(LOSS)
    out = net.blobs["fc_out"].data            # taken before any forward
    grad = net.blobs["data"].diff
    wdiff = net.params["fc"][0].diff
    net.forward(data=X)
    np.testing.assert_allclose(out, X @ W.T)
    net.backward()
    np.testing.assert_allclose(grad, np.tile(2 * W.sum(0), (2, 1)))
    np.testing.assert_allclose(wdiff, 2 * np.tile(X.sum(0), (2, 1)))
    net.clear_param_diffs()
    assert not wdiff.any()
    net.forward(data=2 * X)
    np.testing.assert_allclose(out, 2 * X @ W.T)
    # a write into the held array reaches a forward that starts after it
    out[...] = 1
    np.testing.assert_allclose(net.forward(start="loss")["loss"], np.ones((2, 2)))


def test_second_backward_repeats_blob_diffs_and_accumulates_param_diffs():
    net = fc_net(LOSS)
    net.forward(data=X)
    first = net.backward()["data"].copy()
    once = net.params["fc"][0].diff.copy()
    np.testing.assert_allclose(net.backward()["data"], first)
    np.testing.assert_allclose(net.params["fc"][0].diff, 2 * once)


def test_backward_without_forward_uses_the_current_blobs():
    net = fc_net()
    net.blobs["fc_out"].diff[...] = [[1, 0], [0, 3]]
    grads = net.backward(start="fc", end="fc")
    np.testing.assert_allclose(grads["data"], [[1, 0, -1], [6, 3, 0]])


def test_blob_reshape_keeps_values_within_its_capacity():
    blob = caffe.Blob((2, 3))
    blob.data[...] = np.arange(6).reshape(2, 3)
    blob.reshape(3, 2)
    np.testing.assert_array_equal(blob.data, np.arange(6).reshape(3, 2))
    blob.reshape(1, 4)                       # smaller: the first four values
    np.testing.assert_array_equal(blob.data, [[0, 1, 2, 3]])
    blob.reshape(2, 3)                       # back within the capacity: all six
    np.testing.assert_array_equal(blob.data.ravel(), np.arange(6))
    blob.reshape(4, 4)                       # larger: new memory, zero
    assert blob.data.shape == (4, 4) and not blob.data.any()


def test_ids_inputs_outputs_and_loss_weights():
    net = fc_net(LOSS)
    assert net._layer_names == ["data", "fc", "loss"]
    assert net._bottom_ids(1) == [0] and net._top_ids(1) == [1] and net._top_ids(2) == [2]
    assert net._inputs == [0] and net._outputs == [2]
    assert net._blob_loss_weights == [0, 0, 2]
    assert list(net.blob_loss_weights.items()) == [("data", 0), ("fc_out", 0), ("loss", 2)]


def test_forward_callbacks_see_every_layer_in_order():
    net = fc_net(LOSS)
    seen = []
    net.before_forward(lambda i: seen.append(("before", i)))
    net.after_forward(lambda i: seen.append(("after", i)))
    net.before_backward(lambda i: seen.append(("back", i)))
    net.forward(data=X)
    net.backward()
    assert seen == [("before", 0), ("after", 0), ("before", 1), ("after", 1),
                    ("before", 2), ("after", 2), ("back", 2), ("back", 1), ("back", 0)]


def test_forward_backward_all_batches_and_drops_the_padding():
    net = fc_net()
    data = np.arange(15, dtype=np.float32).reshape(5, 3)
    top = np.ones((5, 2), np.float32)
    outs, diffs = net.forward_backward_all(data=data, fc_out=top)
    np.testing.assert_allclose(outs["fc_out"], data @ W.T)
    np.testing.assert_allclose(diffs["data"], np.tile(W.sum(0), (5, 1)))


def test_hdf5_weights_round_trip_in_caffes_layout(tmp_path):
    h5py = pytest.importorskip("h5py")
    net = fc_net(LOSS)
    net.save_hdf5(tmp_path / "w.h5")
    with h5py.File(tmp_path / "w.h5", "r") as f:
        assert sorted(f["data"]) == ["data", "fc", "loss"]
        np.testing.assert_array_equal(f["data/fc/0"][()], W)
    other = fc_net(LOSS)
    other.params["fc"][0].data[...] = 0
    other.copy_from(str(tmp_path / "w.h5"))
    np.testing.assert_array_equal(other.params["fc"][0].data, W)


PARAM_LAYER = textwrap.dedent('''
    import numpy as np
    import torchcaffe as caffe

    class Affine(caffe.Layer):
        """top = a * bottom, with a learnable scalar a."""
        def setup(self, bottom, top):
            self.blobs.add_blob(1)
            self.blobs[0].data[0] = 3
            self.calls = 0

        def reshape(self, bottom, top):
            top[0].reshape(*bottom[0].data.shape)

        def forward(self, bottom, top):
            self.calls += 1
            top[0].data[...] = self.blobs[0].data[0] * bottom[0].data

        def backward(self, top, propagate_down, bottom):
            self.blobs[0].diff[0] = (top[0].diff * bottom[0].data).sum()
            if propagate_down[0]:
                bottom[0].diff[...] = self.blobs[0].data[0] * top[0].diff
    ''')


@pytest.fixture
def affine_module(tmp_path, monkeypatch):
    (tmp_path / "affine_layer_for_test.py").write_text(PARAM_LAYER)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "affine_layer_for_test"


def affine_net(module, tmp_path):
    text = (INPUT + f'layer {{ name: "aff" type: "Python" bottom: "data" top: "aff" '
            f'python_param {{ module: "{module}" layer: "Affine" }} }}\n'
            'layer { name: "loss" type: "Flatten" bottom: "aff" top: "loss" loss_weight: 1 }\n')
    path = tmp_path / "affine.prototxt"
    path.write_text("force_backward: true\n" + text)
    return caffe.Net(str(path), caffe.TRAIN)


def test_python_layer_with_a_learnable_blob(affine_module, tmp_path):
    net = affine_net(affine_module, tmp_path)
    layer = net.layers[net._layer_names.index("aff")]
    assert type(layer).__name__ == "Affine" and layer.type == "Python"
    assert layer.blobs[0] is net.params["aff"][0]
    net.forward(data=X)
    assert layer.calls == 1  # the user's own object, attributes and all
    np.testing.assert_allclose(net.blobs["aff"].data, 3 * X)
    grads = net.backward()
    np.testing.assert_allclose(layer.blobs[0].diff, [X.sum()])   # dL/da = sum(x)
    np.testing.assert_allclose(grads["data"], np.full_like(X, 3))
    # saved, loaded and updated like any param
    net.save(str(tmp_path / "aff.caffemodel"))
    layer.blobs[0].data[0] = -1
    net.copy_from(str(tmp_path / "aff.caffemodel"))
    assert layer.blobs[0].data[0] == 3


def test_python_layer_exception_keeps_its_type(tmp_path, monkeypatch):
    (tmp_path / "raising_layer_for_test.py").write_text(
        "import torchcaffe as caffe\n"
        "class Boom(caffe.Layer):\n"
        "    def setup(self, bottom, top):\n"
        "        raise RuntimeError('no')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    text = (INPUT + 'layer { name: "b" type: "Python" bottom: "data" top: "b" '
            'python_param { module: "raising_layer_for_test" layer: "Boom" } }\n')
    with pytest.raises(RuntimeError, match="layer 'b'.*Boom.setup failed.*no") as info:
        caffe.Net(parse_net_text(text), phase=caffe.TEST)
    assert isinstance(info.value, caffe.LayerError)


SOLVER = '''
base_lr: 0.5 lr_policy: "step" gamma: 0.1 stepsize: 2 display: 0 max_iter: 10
snapshot_prefix: "{prefix}"
train_net_param {{ force_backward: true
  layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 2 dim: 3 }} }} }}
  layer {{ name: "fc" type: "InnerProduct" bottom: "data" top: "fc_out"
           inner_product_param {{ num_output: 2 bias_term: false }} }}
  layer {{ name: "loss" type: "Flatten" bottom: "fc_out" top: "loss" loss_weight: 1 }} }}
'''


def test_solver_lr_apply_update_and_share_weights(tmp_path):
    (tmp_path / "solver.prototxt").write_text(SOLVER.format(prefix=tmp_path / "snap"))
    solver = caffe.SGDSolver(str(tmp_path / "solver.prototxt"))
    assert solver.lr == pytest.approx(0.5)          # before any step
    weights = solver.net.layers[1].blobs[0]
    weights.data[...] = 0
    weights.diff[...] = 1
    solver.apply_update()                            # one update, and iter advances
    assert solver.iter == 1
    np.testing.assert_allclose(weights.data, np.full((2, 3), -0.5))
    solver.step(1)
    assert solver.iter == 2 and solver.lr == pytest.approx(0.05)  # step policy at iter 2
    other = caffe.Net(parse_net_text(INPUT + IP), phase=caffe.TEST)
    solver.share_weights(other)
    np.testing.assert_array_equal(other.params["fc"][0].data, weights.data)


def test_top_level_names_as_pycaffe():
    assert caffe.__version__ == "1.0.0"
    assert caffe.has_nccl() is True  # torch.distributed (gloo on CPU, NCCL on GPUs)
    assert caffe.solver_count() == 1 and caffe.solver_rank() == 0
    caffe.set_solver_count(1)
    caffe.set_solver_rank(0)
    caffe.set_multiprocess(False)
    assert isinstance(caffe.NCCL.new_uid(), bytes)
    timer = caffe.Timer()
    timer.start()
    sum(range(10000))
    timer.stop()
    assert timer.ms > 0
    for name in ("io", "draw", "Classifier", "Detector", "layer_type_list", "init_log", "log"):
        assert hasattr(caffe, name), name
    assert not hasattr(caffe, "no_such_name")


def test_set_random_seed_makes_fillers_reproducible():
    text = INPUT + ('layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
                    'inner_product_param { num_output: 4 weight_filler { type: "gaussian" } } }\n')

    def weights(seed):
        caffe.set_random_seed(seed)
        return caffe.Net(parse_net_text(text), phase=caffe.TEST).params["fc"][0].data.copy()

    first, again, other = weights(5), weights(5), weights(6)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other) and first.std() > 0.5


def test_in_place_layer_on_a_held_input_blob_still_backpropagates():
    # data (held by the user) -> Scale x2 in place -> fc (ones) -> loss
    net = caffe.Net(parse_net_text(
        "force_backward: true\n" + INPUT +
        'layer { name: "sc" type: "Scale" bottom: "data" top: "data" '
        'scale_param { filler { type: "constant" value: 2 } } }\n'
        'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
        'inner_product_param { num_output: 2 weight_filler { type: "constant" value: 1 } } }\n'
        'layer { name: "l" type: "Flatten" bottom: "fc" top: "l" loss_weight: 1 }\n'),
        phase=caffe.TRAIN)
    net.blobs["data"].data[...] = X
    net.forward()
    np.testing.assert_allclose(net.blobs["fc"].data, np.tile(2 * X.sum(1, keepdims=True), 2))
    grads = net.backward()
    np.testing.assert_allclose(grads["data"], np.full_like(X, 4))      # 2 outputs x scale 2
    np.testing.assert_allclose(net.params["sc"][0].diff, 2 * X.sum(0))  # 2 outputs x sum of x
