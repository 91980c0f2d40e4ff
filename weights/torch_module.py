"""A deploy net as a plain `torch.nn.Module`, for export (ONNX) and for use in PyTorch.

torchcaffe-only (imports torchcaffe directly, not through caffe_backend):
it runs torchcaffe's layer objects, whose `forward` is pure torch ops on
tensors, in the net's order, with the parameter blobs held as the module's
`torch.nn.Parameter`s.  Layer shapes are worked out the way the net does
(`reshape` when a bottom's shape changes), so the same module serves any
input size in eager mode; a traced export fixes the size it was traced at.
"""
from __future__ import annotations

import os

import torch

from torchcaffe.errors import CaffeError

TEST = 1


def blob_key(layer: str, index: int) -> str:
    """Name of parameter blob `index` of `layer` in exported files: net.params[layer][index]."""
    return f"{layer}.{index}"


class CaffeModule(torch.nn.Module):
    """forward(*inputs) -> tuple of the net's outputs, in `output_names` order."""

    def __init__(self, deploy: str | os.PathLike, weights: str | os.PathLike | None = None):
        super().__init__()
        import torchcaffe

        net = torchcaffe.Net(os.fspath(deploy), TEST, weights=weights)
        self.input_names: list[str] = list(net.inputs)
        self.output_names: list[str] = list(net.outputs)
        self.input_shapes = {name: tuple(net.blobs[name].shape) for name in self.input_names}
        self.blobs = torch.nn.ParameterList()
        self.keys: list[str] = []  # blob_key of each entry of self.blobs
        owner: dict[int, int] = {}  # id(ParamBlob) -> index into self.blobs (shared params)
        self._plan = []
        bottoms, tops = net.bottom_names, net.top_names
        for handle in net._handles:  # the runtime's view: each layer's implementation
            if handle.type == "Input":
                continue
            slots = []
            for j, blob in enumerate(handle.blobs):
                if id(blob) not in owner:
                    owner[id(blob)] = len(self.blobs)
                    self.blobs.append(torch.nn.Parameter(
                        torch.from_numpy(blob.data.copy()), requires_grad=False))
                    self.keys.append(blob_key(handle.name, j))
                # a PERMISSIVE shared param is viewed in this layer's shape
                slots.append((owner[id(blob)], tuple(handle.impl.blobs[j].shape)))
            shapes = [tuple(net.blobs[b].shape) for b in bottoms[handle.name]]
            self._plan.append((handle.impl, bottoms[handle.name], tops[handle.name], slots,
                               shapes))

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if len(inputs) != len(self.input_names):
            raise CaffeError(f"the net takes inputs {self.input_names}, {len(inputs)} given")
        values = dict(zip(self.input_names, inputs))
        for step, (impl, bottom_names, top_names, slots, shapes) in enumerate(self._plan):
            impl.blobs = [self.blobs[i].view(shape) for i, shape in slots]
            if impl.writes_blobs:
                # a forward that updates its blobs (BatchNorm on batch
                # statistics) does so on copies: the module keeps the
                # caffemodel's values, and its outputs do not depend on them
                impl.blobs = [blob.clone() for blob in impl.blobs]
            bottoms = [values[name] for name in bottom_names]
            now = [tuple(t.shape) for t in bottoms]
            if now != shapes:
                impl.reshape(now)
                self._plan[step] = (impl, bottom_names, top_names, slots, now)
            values.update(zip(top_names, impl.forward(bottoms)))
        return tuple(values[name] for name in self.output_names)

    def caffe_state(self) -> dict[str, torch.Tensor]:
        """{'<layer>.<index>': tensor} for every parameter blob (shared ones once)."""
        return {key: p.detach() for key, p in zip(self.keys, self.blobs)}

    def load_caffe_state(self, state: dict, source: str = "state") -> None:
        """Set every parameter blob from {'<layer>.<index>': array or tensor}."""
        missing = [k for k in self.keys if k not in state]
        extra = [k for k in state if k not in self.keys]
        if missing or extra:
            raise CaffeError(f"{source}: blobs do not match the net (missing {missing}, "
                             f"unexpected {extra})")
        with torch.no_grad():
            for key, param in zip(self.keys, self.blobs):
                value = torch.as_tensor(state[key])
                if tuple(value.shape) != tuple(param.shape):
                    raise CaffeError(f"{source}: blob '{key}' has shape {tuple(value.shape)}, "
                                     f"the net wants {tuple(param.shape)}")
                param.copy_(value)
