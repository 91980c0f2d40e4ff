"""pycaffe's `caffe.draw`: a NetParameter as a Graphviz graph.

Layers are boxes (coloured by kind; in-place neuron layers green), blobs
are grey octagons, edges run bottom -> layer -> top and carry the output
count of data / convolution / inner-product layers. `get_pydot_graph` needs
pydot (`pip install "fcn-torchcaffe[draw]"`); rendering (`draw_net`,
`draw_net_to_file`) also needs Graphviz's `dot` program.
"""
from __future__ import annotations

from .errors import CaffeError
from .proto import caffe_pb2

_BLOB_STYLE = {"shape": "octagon", "fillcolor": "#E0E0E0", "style": "filled"}
_IN_PLACE_COLOR = "#90EE90"
_DEFAULT_COLOR = "#6495ED"
_COLORS = {"Convolution": "#FF5050", "Deconvolution": "#FF5050", "Pooling": "#FF9900",
           "InnerProduct": "#CC33FF"}
_LEARNING_TYPES = ("Convolution", "Deconvolution", "InnerProduct")


def _pydot():
    try:
        import pydot
    except ImportError:
        raise CaffeError('drawing nets needs pydot: pip install "fcn-torchcaffe[draw]"') from None
    return pydot


def _first(values, default: int) -> int:
    return values[0] if len(values) else default


def get_edge_label(layer: caffe_pb2.LayerParameter) -> str:
    """The label of a layer's output edges: batch size or output count."""
    if layer.type == "Data":
        return f"Batch {layer.data_param.batch_size}"
    if layer.type in ("Convolution", "Deconvolution"):
        return str(layer.convolution_param.num_output)
    if layer.type == "InnerProduct":
        return str(layer.inner_product_param.num_output)
    return ""


def get_layer_lr_mult(layer: caffe_pb2.LayerParameter) -> tuple[float, float]:
    """(weight, bias) learning-rate multipliers of a learning layer (1 when unset)."""
    if layer.type not in _LEARNING_TYPES:
        raise CaffeError(f"layer '{layer.name}': {layer.type} layers have no learning-rate "
                         "multipliers")
    mults = [spec.lr_mult for spec in layer.param] + [1.0] * (2 - len(layer.param))
    has_bias = (layer.convolution_param.bias_term if layer.type != "InnerProduct"
                else layer.inner_product_param.bias_term)
    return mults[0], (mults[1] if has_bias else 0.0)


def get_layer_label(layer: caffe_pb2.LayerParameter, rankdir: str,
                    display_lrm: bool = False) -> str:
    """Name, type and (for spatial layers) kernel / stride / pad, one per line
    in a left-right graph, space-separated in a top-bottom one."""
    separator = " " if rankdir in ("TB", "BT") else r"\n"
    kind = layer.type
    if kind == "Pooling":
        pool = caffe_pb2.PoolingParameter.PoolMethod.Name(layer.pooling_param.pool)
        parts = [layer.name, f"({kind} {pool})"]
    else:
        parts = [layer.name, f"({kind})"]
    if kind == "Pooling":
        p = layer.pooling_param
        window = (p.kernel_size, p.stride, p.pad)
    elif kind in ("Convolution", "Deconvolution"):
        p = layer.convolution_param
        window = (_first(p.kernel_size, 1), _first(p.stride, 1), _first(p.pad, 0))
    else:
        window = None
    if window is not None:
        parts.append(separator.join(f"{what}: {value}" for what, value in
                                    zip(("kernel size", "stride", "pad"), window)))
    if display_lrm and kind in _LEARNING_TYPES:
        weight, bias = get_layer_lr_mult(layer)
        if weight or bias:
            parts.append(f"lr mult: {weight:.1f}, {bias:.1f}")
    return '"' + separator.join(parts) + '"'


def _in_phase(layer: caffe_pb2.LayerParameter, phase) -> bool:
    if phase is None:
        return True
    if len(layer.include) and len(layer.exclude):
        raise CaffeError(f"layer '{layer.name}' has both include and exclude rules")
    if len(layer.include):
        return any(rule.phase == phase for rule in layer.include)
    return not any(rule.phase == phase for rule in layer.exclude)


def get_pydot_graph(caffe_net: caffe_pb2.NetParameter, rankdir: str, label_edges: bool = True,
                    phase=None, display_lrm: bool = False):
    """A pydot graph of the net's layers (only those of `phase` when given)."""
    pydot = _pydot()
    graph = pydot.Dot(caffe_net.name or "Net", graph_type="digraph", rankdir=rankdir)
    nodes: dict[str, object] = {}
    edges: list[tuple[str, str, str]] = []

    def blob_node(name: str) -> str:
        key = f"{name}_blob"
        nodes.setdefault(key, pydot.Node(key, label=f'"{name}"', **_BLOB_STYLE))
        return key

    for layer in caffe_net.layer:
        if not _in_phase(layer, phase):
            continue
        key = f"{layer.name}_{layer.type}"
        in_place = len(layer.bottom) == 1 and list(layer.bottom) == list(layer.top)
        color = _IN_PLACE_COLOR if in_place else _COLORS.get(layer.type, _DEFAULT_COLOR)
        nodes[key] = pydot.Node(key, label=get_layer_label(layer, rankdir, display_lrm),
                                shape="record", style="filled", fillcolor=color)
        for bottom in layer.bottom:
            edges.append((blob_node(bottom), key, ""))
        label = get_edge_label(layer) if label_edges else ""
        for top in layer.top:
            edges.append((key, blob_node(top), label))
    for node in nodes.values():
        graph.add_node(node)
    for src, dst, label in edges:
        graph.add_edge(pydot.Edge(src, dst, label=f'"{label}"'))
    return graph


def draw_net(caffe_net: caffe_pb2.NetParameter, rankdir: str, ext: str = "png", phase=None,
             display_lrm: bool = False) -> bytes:
    """The net rendered by Graphviz in format `ext` (png, pdf, svg, ...)."""
    graph = get_pydot_graph(caffe_net, rankdir, phase=phase, display_lrm=display_lrm)
    try:
        return graph.create(format=ext)
    except FileNotFoundError:
        raise CaffeError("drawing nets needs Graphviz's 'dot' program on PATH "
                         "(Debian/Ubuntu: apt install graphviz)") from None


def draw_net_to_file(caffe_net: caffe_pb2.NetParameter, filename: str, rankdir: str = "LR",
                     phase=None, display_lrm: bool = False) -> None:
    """Render the net into `filename`; its extension picks the format."""
    ext = filename.rsplit(".", 1)[-1] if "." in filename else "png"
    image = draw_net(caffe_net, rankdir, ext, phase, display_lrm)
    with open(filename, "wb") as out:
        out.write(image)
