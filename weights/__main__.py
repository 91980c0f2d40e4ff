"""`python -m weights`: list, download, prepare-base, export, infer."""
from __future__ import annotations

import argparse
import logging
import sys

from torchcaffe.errors import CaffeError


def _list(args) -> None:
    from weights.registry import REGISTRY

    for entry in REGISTRY.values():
        size = f"{entry.size} bytes" if entry.size else "size unknown"
        sha1 = entry.sha1 or "sha1 unknown"
        print(f"{entry.name:30} net {entry.net:22} {size}, {sha1}\n"
              f"{'':30} {entry.url}\n{'':30} {entry.description}")


def _download(args) -> None:
    from weights.download import download

    for name in args.names:
        print(download(name, args.dir, sha1=args.sha1, progress=not args.quiet))


def _prepare(args) -> None:
    from weights.prepare import prepare_base

    print(prepare_base(args.base, weights=args.weights, out_dir=args.dir,
                       nets_dir=args.nets_dir, progress=not args.quiet))


def _export(args) -> None:
    from weights.export import export

    for out in args.out:
        result = export(args.deploy, args.weights, out, input_shape=args.input_shape,
                        device=args.device)
        print(f"{result.path} ({result.format}, max difference {result.max_error:.3g} "
              f"relative to the largest output magnitude)")


def _infer(args) -> None:
    from weights.infer import run

    run(args)


def build_parser() -> argparse.ArgumentParser:
    from weights.infer import add_arguments as add_infer_arguments
    from weights.prepare import BASES

    parser = argparse.ArgumentParser(
        prog="python -m weights",
        description="Reference FCN weights: the Model Zoo registry, downloads, the "
                    "fully convolutional ILSVRC base nets, export to other formats, "
                    "and inference.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list the known weight files",
                       description="List every Model Zoo caffemodel and ILSVRC base net: "
                       "name, the net it fits, size and sha1 where published, URL.")
    p.set_defaults(run=_list)

    p = sub.add_parser("download", help="download weight files by name or URL",
                       description="Download caffemodels by registry name (see `list`) or URL. "
                       "Shows progress, resumes an interrupted download (the .part file) "
                       "with an HTTP Range request, checks the sha1 where known and only "
                       "then renames the file into place.")
    p.add_argument("names", nargs="+", metavar="NAME_OR_URL")
    p.add_argument("--dir", default="models/weights",
                   help="destination folder (default: %(default)s)")
    p.add_argument("--sha1", default=None, help="expected sha1 (for a URL not in the registry)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_download)

    p = sub.add_parser("prepare-base", help="cast an ILSVRC classifier to its FCN base net",
                       description="Turn an ILSVRC classifier caffemodel into the fully "
                       "convolutional base net FCN training starts from: load it into the "
                       "classifier deploy net (fc6/fc7/fc8 InnerProduct), transplant into "
                       "the fully convolutional net (fc6 -> 7x7 conv for VGG16, 6x6 for "
                       "AlexNet; fc7/fc8 -> 1x1 convs) and save <base>-fcn.caffemodel. The "
                       "deploy nets come from netspec (written under --nets-dir if absent); "
                       "the ILSVRC weights are downloaded unless --weights names a file.")
    p.add_argument("base", choices=sorted(BASES))
    p.add_argument("--weights", default=None,
                   help="classifier caffemodel file or registry name "
                   "(default: vgg16-ilsvrc / bvlc_alexnet)")
    p.add_argument("--dir", default="models/ilsvrc-nets",
                   help="where the download and the result go (default: %(default)s)")
    p.add_argument("--nets-dir", default="models", help="netspec output folder "
                   "holding <net>/deploy.prototxt (default: %(default)s)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_prepare)

    p = sub.add_parser("export", help="export weights to .pt / .npz / .safetensors / .onnx",
                       description="Export a caffemodel with its deploy net. The format "
                       "follows each output's suffix: .pt (PyTorch state_dict), .npz, "
                       ".safetensors (needs safetensors) hold the parameter blobs keyed "
                       "'<layer>.<index>' as in net.params; .onnx (opset 17; needs onnx and "
                       "onnxruntime) holds the whole net at the deploy input shape. Every "
                       "file is checked after writing by running it on an input and "
                       "comparing with the Caffe runtime's forward.")
    p.add_argument("--deploy", required=True, help="deploy.prototxt")
    p.add_argument("--weights", required=True, help="the .caffemodel")
    p.add_argument("out", nargs="+", help="output files")
    p.add_argument("--input-shape", type=int, nargs="+", default=None, metavar="DIM",
                   help="input shape to export and check at (default: the deploy net's)")
    p.add_argument("--device", default="cpu", help="torch device for the check "
                   "(default: %(default)s)")
    p.set_defaults(run=_export)

    p = sub.add_parser("infer", help="segment images with a deploy net",
                       description="Segment images the reference way (RGB -> BGR, mean "
                       "subtraction, input reshaped to the image, argmax of the score) and "
                       "write <stem>.png (labels in the VOC palette) and <stem>_overlay.png.")
    add_infer_arguments(p)
    p.set_defaults(run=_infer)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose or args.command == "prepare-base"
                        else logging.WARNING, format="%(message)s")
    try:
        args.run(args)
    except CaffeError as exc:
        parser.exit(1, f"error: {exc}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
