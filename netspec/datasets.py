"""The datasets' Python data layers, as the reference nets declare them.

Each `Dataset` names the data-layer module and classes (resolved by the
data_layers package at run time), the train and test splits, the tops the
layer produces, the prototxt file names the release uses and the
`param_str` settings (directories are relative to the model folder, as in
the release). `data_layer` adds it to a NetSpec; for deploy nets
`input_layer` declares the same image tops as a 1 x C x 500 x 500 Input.
"""
from __future__ import annotations

from dataclasses import dataclass

from caffe_backend import caffe

L = caffe.layers

# BGR mean of the ILSVRC training images, subtracted by the data layers
MEAN = (104.00699, 116.66877, 122.67892)
SEED = 1337
DEPLOY_SIZE = 500


@dataclass(frozen=True)
class Source:
    """One data-layer class and its settings; `split` is filled in per net.
    The settings keep the key order the release's param_str has."""

    layer: str
    settings: tuple[tuple[str, object], ...]

    def param_str(self, split: str, extra: dict | None = None) -> str:
        values = {key: (split if key == "split" else value) for key, value in self.settings}
        return repr({**values, **(extra or {})})


@dataclass(frozen=True)
class TrainingOptions:
    """The paper's training studies as train data-layer options (see
    data_layers.seg_data): loss sampling with probability `loss_p` (the
    solver's batch then grows by 1/loss_p), class balancing by
    `class_weights`, random mirroring and translation jitter. The defaults
    are the release's: none of them, and nothing added to any file.

    Class balancing takes either of the paper's two ways (`class_balance`):
    "sample" keeps each labelled pixel of class c with probability
    w_c / max(w) (a data layer option), "loss" weights each pixel's loss by
    w_c (the loss becomes an InfogainLoss with H = diag(w), see
    `weighted_loss`)."""

    loss_p: float = 1.0
    loss_cell: int = 32
    class_weights: tuple[float, ...] | None = None
    class_balance: str = "sample"
    mirror: bool = False
    jitter: int = 0

    def settings(self) -> dict:
        """The param_str keys that differ from the defaults."""
        default = TrainingOptions()
        chosen = {key: getattr(self, key) for key in self.__dataclass_fields__
                  if getattr(self, key) != getattr(default, key)}
        chosen.pop("class_balance", None)  # the driver's choice, not the layer's
        if self.class_balance == "loss":
            chosen.pop("class_weights", None)  # weighted in the loss instead
        if "class_weights" in chosen:
            chosen["class_weights"] = list(chosen["class_weights"])
        if self.loss_p == 1.0:
            chosen.pop("loss_cell", None)  # no sampling, no cells
        return chosen

    def iter_size(self, iter_size: int) -> int:
        """The solver's iter_size grown by 1/loss_p (rounded), so a step sees
        as many loss cells as without sampling."""
        return max(1, round(iter_size / self.loss_p))


@dataclass(frozen=True)
class Dataset:
    name: str
    module: str
    train: Source
    test: Source
    train_split: str
    test_split: str
    tops: tuple[str, ...]                 # the data layer's tops, labels last
    image_channels: tuple[tuple[str, int], ...]  # image tops and their channels
    train_file: str
    test_file: str
    test_iter: int                        # images in the test split


def data_layer(n, dataset: Dataset, split: str, options: TrainingOptions | None = None):
    """Add the dataset's Python data layer for `split` to NetSpec `n`; the
    training `options` go to the train split's layer only."""
    training = split == dataset.train_split
    source = dataset.train if training else dataset.test
    extra = options.settings() if options is not None and training else None
    tops = L.Python(module=dataset.module, layer=source.layer, ntop=len(dataset.tops),
                    param_str=source.param_str(split, extra))
    for name, top in zip(dataset.tops, tops if len(dataset.tops) > 1 else (tops,)):
        n[name] = top


def input_layer(n, dataset: Dataset):
    """The deploy nets' Input layer ("input"), one top per image top."""
    shapes = [dict(dim=[1, channels, DEPLOY_SIZE, DEPLOY_SIZE])
              for _, channels in dataset.image_channels]
    tops = L.Input(name="input", ntop=len(shapes), shape=shapes)
    names = [name for name, _ in dataset.image_channels]
    for name, top in zip(names, tops if len(names) > 1 else (tops,)):
        n[name] = top


def voc(data_root: str = "../data") -> Dataset:
    """PASCAL VOC: SBDD train for learning, VOC2011 seg11valid for testing.
    `data_root` is relative to the model folder (the release's voc-fcn16s
    points two folders up, its other VOC nets one)."""
    return Dataset(
        name="voc",
        module="voc_layers",
        train=Source("SBDDSegDataLayer", (
            ("sbdd_dir", f"{data_root}/sbdd/dataset"), ("seed", SEED), ("split", None),
            ("mean", MEAN))),
        test=Source("VOCSegDataLayer", (
            ("voc_dir", f"{data_root}/pascal/VOC2011"), ("seed", SEED), ("split", None),
            ("mean", MEAN))),
        train_split="train",
        test_split="seg11valid",
        tops=("data", "label"),
        image_channels=(("data", 3),),
        train_file="train.prototxt",
        test_file="val.prototxt",
        # seg11valid has 736 images; the release's first VOC solvers said 1111
        # (all of VOC2011 val) until a later commit corrected them to 736
        test_iter=736,
    )


_SIFT_FLOW_SOURCE = Source("SIFTFlowSegDataLayer", (
    ("siftflow_dir", "../data/sift-flow"), ("seed", SEED), ("split", None)))

SIFT_FLOW = Dataset(
    name="siftflow",
    module="siftflow_layers",
    train=_SIFT_FLOW_SOURCE,
    test=_SIFT_FLOW_SOURCE,
    train_split="trainval",
    test_split="test",
    tops=("data", "sem", "geo"),
    image_channels=(("data", 3),),
    train_file="trainval.prototxt",
    test_file="test.prototxt",
    test_iter=200,
)

# The release's PASCAL-Context nets point two folders up, unlike the others
# (the writer links <out>/data so that both spellings reach one data root).
_PASCAL_CONTEXT_SOURCE = Source("PASCALContextSegDataLayer", (
    ("context_dir", "../../data/pascal-context"), ("seed", SEED), ("split", None),
    ("voc_dir", "../../data/pascal")))

PASCAL_CONTEXT = Dataset(
    name="pascalcontext",
    module="pascalcontext_layers",
    train=_PASCAL_CONTEXT_SOURCE,
    test=_PASCAL_CONTEXT_SOURCE,
    train_split="train",
    test_split="val",
    tops=("data", "label"),
    image_channels=(("data", 3),),
    train_file="train.prototxt",
    test_file="val.prototxt",
    test_iter=5105,
)

NYUD_CHANNELS = {"color": 3, "hha": 3, "depth": 1}


def nyud(*modalities: str, image_tops: tuple[str, ...] | None = None) -> Dataset:
    """NYUDv2 loading `modalities` (color, hha, depth) and the label. A
    single-modality net calls its image top `data` (`image_tops` overrides)."""
    unknown = set(modalities) - set(NYUD_CHANNELS)
    if unknown:
        raise ValueError(f"NYUD modalities {sorted(unknown)}: choose from {sorted(NYUD_CHANNELS)}")
    names = image_tops or (("data",) if len(modalities) == 1 else modalities)
    source = Source("NYUDSegDataLayer", (
        ("tops", [*modalities, "label"]), ("seed", SEED), ("nyud_dir", "../data/nyud"),
        ("split", None)))
    return Dataset(
        name="nyud-" + "-".join(modalities),
        module="nyud_layers",
        train=source,
        test=source,
        train_split="trainval",
        test_split="test",
        tops=(*names, "label"),
        image_channels=tuple(zip(names, (NYUD_CHANNELS[m] for m in modalities))),
        train_file="trainval.prototxt",
        test_file="test.prototxt",
        test_iter=654,
    )
