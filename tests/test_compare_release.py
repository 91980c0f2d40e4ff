"""netspec.compare_release on small hand-written release folders."""
import pytest

from netspec import compare_release

# a solver and a tiny net, as we would emit them
OUR_SOLVER = """\
train_net: "train.prototxt"
test_net: "val.prototxt"
test_iter: 736
base_lr: 1e-10
momentum: 0.99
"""
# the same fields in another order, with comments: equal as messages only
RELEASE_SOLVER = """\
train_net: "train.prototxt"
# comment
test_net: "val.prototxt"
momentum: 0.99
base_lr: 1e-10
test_iter: 736
"""
NET = """\
layer {{
  name: "data"
  type: "Python"
  top: "data"
  python_param {{
    module: "voc_layers"
    layer: "VOCSegDataLayer"
    param_str: "{param_str}"
  }}
}}
layer {{
  name: "score"
  type: "Convolution"
  bottom: "data"
  top: "score"
  convolution_param {{
    num_output: {classes}
    kernel_size: 1
  }}
}}
"""
PARAM_STR = "{'split': 'train', 'mean': (104.0, 116.5), 'seed': 1337}"
# the same literal, keys reordered and spaced differently
PARAM_STR_REORDERED = "{'seed':1337,'mean':(104.0,116.5),  'split':'train'}"


def net(classes=21, param_str=PARAM_STR):
    return NET.format(classes=classes, param_str=param_str)


def write_tree(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def run_check(tmp_path, monkeypatch, capsys, ours, release, extra_args=()):
    """Run the command on `release` (file -> text) with `ours` standing in for
    the emitted nets; return the exit status, the table rows and the output."""
    release_dir = tmp_path / "release"
    write_tree(release_dir, release)
    monkeypatch.setattr(compare_release, "emit_ours",
                        lambda out_dir, models: write_tree(out_dir, ours))
    status = compare_release.main([str(release_dir), *extra_args])
    out = capsys.readouterr().out
    return status, table_rows(out), out


def table_rows(out):
    rows = {}
    for line in out.splitlines():
        if line.startswith("| ") and not line.startswith("| file "):
            file, equal, byte_equal, difference = (cell.strip() for cell in line[2:-2].split(" | "))
            rows[file] = (equal, byte_equal, difference)
    return rows


MIXED_OURS = {
    "voc-fcn32s/solver.prototxt": OUR_SOLVER,
    "voc-fcn32s/val.prototxt": net(),
    "voc-fcn32s/train.prototxt": net(classes=21),
    "voc-fcn16s/train.prototxt": net(),
    "voc-fcn16s/deploy.prototxt": net(),
}
MIXED_RELEASE = {
    "voc-fcn32s/solver.prototxt": RELEASE_SOLVER,
    "voc-fcn32s/val.prototxt": net(),
    "voc-fcn32s/train.prototxt": net(classes=60),
    "voc-fcn16s/train.prototxt": net(param_str=PARAM_STR_REORDERED),
    "voc-fcn16s/val.prototxt": net(),
    "voc-fcn16s/net.py": "not a prototxt, not compared\n",
}


def test_table_rows_for_each_kind_of_file(tmp_path, monkeypatch, capsys):
    status, rows, out = run_check(tmp_path, monkeypatch, capsys, MIXED_OURS, MIXED_RELEASE)
    assert rows == {
        "voc-fcn32s/solver.prototxt": ("yes", "no", ""),
        "voc-fcn32s/train.prototxt": (
            "no", "no", 'layer[1 "score"].convolution_param.num_output: ours 21, release 60'),
        "voc-fcn32s/val.prototxt": ("yes", "yes", ""),
        "voc-fcn16s/deploy.prototxt": ("-", "-", "ours only: the release ships no such file"),
        "voc-fcn16s/train.prototxt": ("yes", "no", ""),
        "voc-fcn16s/val.prototxt": ("-", "-", "release only: we emit no such file"),
    }
    assert status == 1
    assert "3 of 5 release files equal as protobuf messages, 1 byte for byte" in out
    assert "release files we do not emit: 1 (voc-fcn16s/val.prototxt)" in out
    assert "files we emit that the release lacks: 1 (voc-fcn16s/deploy.prototxt)" in out
    # only the folders the release has are compared; the others are named
    assert "model folders absent from the release: voc-fcn8s, " in out


def test_all_equal_passes_even_with_files_the_release_lacks(tmp_path, monkeypatch, capsys):
    ours = {"voc-fcn32s/solver.prototxt": OUR_SOLVER, "voc-fcn32s/deploy.prototxt": net()}
    release = {"voc-fcn32s/solver.prototxt": RELEASE_SOLVER}
    status, rows, out = run_check(tmp_path, monkeypatch, capsys, ours, release)
    assert status == 0
    assert rows["voc-fcn32s/solver.prototxt"] == ("yes", "no", "")
    assert "1 of 1 release files equal as protobuf messages, 0 byte for byte" in out


def test_a_release_file_we_do_not_emit_fails(tmp_path, monkeypatch, capsys):
    status, rows, _ = run_check(tmp_path, monkeypatch, capsys, {"voc-fcn32s/val.prototxt": net()},
                                {"voc-fcn32s/val.prototxt": net(), "voc-fcn32s/x.prototxt": net()})
    assert rows["voc-fcn32s/x.prototxt"][2] == "release only: we emit no such file"
    assert status == 1


@pytest.mark.parametrize("ours, release, difference", [
    # a value differs: the key is named
    (PARAM_STR, "{'split': 'val', 'mean': (104.0, 116.5), 'seed': 1337}",
     "layer[0 \"data\"].python_param.param_str['split']: ours 'train', release 'val'"),
    # a key only one side has
    (PARAM_STR, "{'split': 'train', 'mean': (104.0, 116.5)}",
     "layer[0 \"data\"].python_param.param_str['seed']: ours 1337, release <absent>"),
    # a tuple is not a list
    ("{'mean': (1, 2)}", "{'mean': [1, 2]}",
     "layer[0 \"data\"].python_param.param_str['mean']: ours (1, 2), release [1, 2]"),
    # not literals: compared as text (and never evaluated)
    ("dict(split='train')", "dict(split = 'train')",
     "layer[0 \"data\"].python_param.param_str (not a Python literal): "
     "ours \"dict(split='train')\", release \"dict(split = 'train')\""),
])
def test_param_str_differences(tmp_path, monkeypatch, capsys, ours, release, difference):
    status, rows, _ = run_check(tmp_path, monkeypatch, capsys,
                                {"voc-fcn32s/val.prototxt": net(param_str=ours)},
                                {"voc-fcn32s/val.prototxt": net(param_str=release)})
    assert rows["voc-fcn32s/val.prototxt"] == ("no", "no", difference)
    assert status == 1


def test_presence_and_length_differences(tmp_path, monkeypatch, capsys):
    # an explicit default (bias_term: true) is a difference, as in protobuf equality
    explicit = net().replace("kernel_size: 1", "kernel_size: 1\n    bias_term: true")
    one_layer = net().split("layer {\n  name: \"score\"")[0]
    status, rows, _ = run_check(
        tmp_path, monkeypatch, capsys,
        {"voc-fcn32s/train.prototxt": net(), "voc-fcn32s/val.prototxt": net()},
        {"voc-fcn32s/train.prototxt": explicit, "voc-fcn32s/val.prototxt": one_layer})
    assert rows["voc-fcn32s/train.prototxt"][2] == (
        'layer[1 "score"].convolution_param.bias_term: ours <unset>, release true')
    assert rows["voc-fcn32s/val.prototxt"][2] == "layer: ours 2 entries, release 1 entries"
    assert status == 1


def test_unparseable_release_file_is_a_difference(tmp_path, monkeypatch, capsys):
    status, rows, _ = run_check(tmp_path, monkeypatch, capsys,
                                {"voc-fcn32s/solver.prototxt": OUR_SOLVER},
                                {"voc-fcn32s/solver.prototxt": "no_such_field: 1\n"})
    equal, byte_equal, difference = rows["voc-fcn32s/solver.prototxt"]
    assert (equal, byte_equal) == ("no", "no")
    assert difference.startswith("release file does not parse (") and "no_such_field" in difference
    assert status == 1


@pytest.mark.parametrize("make, message", [
    (lambda root: root / "absent", "is not a folder"),
    (lambda root: (root / "voc-fcn32s").mkdir() or root, "is not a checkout of the FCN release"),
])
def test_not_a_release_checkout(tmp_path, capsys, make, message):
    with pytest.raises(SystemExit) as exit_info:
        compare_release.main([str(make(tmp_path))])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_our_emitted_solver_against_the_release_facts(tmp_path, capsys):
    # the release's voc-fcn32s solver, field by field (hand-written, another order)
    release = tmp_path / "release"
    write_tree(release, {"voc-fcn32s/solver.prototxt": """\
max_iter: 100000
base_lr: 1e-10
lr_policy: "fixed"
momentum: 0.99
weight_decay: 0.0005
iter_size: 1
train_net: "train.prototxt"
test_net: "val.prototxt"
test_iter: 736
test_interval: 999999999
test_initialization: false
display: 20
average_loss: 20
snapshot: 4000
snapshot_prefix: "snapshot/train"
"""})
    out_dir = tmp_path / "ours"
    status = compare_release.main([str(release), "--out", str(out_dir)])
    rows = table_rows(capsys.readouterr().out)
    assert rows["voc-fcn32s/solver.prototxt"] == ("yes", "no", "")
    assert rows["voc-fcn32s/train.prototxt"] == ("-", "-", "ours only: the release ships no such file")
    assert status == 0
    # --out keeps what was emitted, as `python -m netspec` writes it
    assert {path.name for path in (out_dir / "voc-fcn32s").iterdir()} == {
        "train.prototxt", "val.prototxt", "deploy.prototxt", "solver.prototxt", "solve.py"}
