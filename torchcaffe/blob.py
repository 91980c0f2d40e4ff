"""pycaffe's Blob: `data` and `diff` as numpy arrays over torch tensors.

On the CPU `.data` / `.diff` are numpy views of the tensors the net computes
with: a write is seen by the next forward, a read sees current values, no copy
is made. On the GPU each array is a host mirror of a device tensor, synced the
way Caffe's SyncedMemory syncs: touching `.data` after the device wrote copies
device -> host once and marks the host as the newest copy (pycaffe's `.data`
is mutable access), so the next use on the device copies host -> device once.
Solvers use `data_tensor` / `diff_tensor`, which hand out the device tensors
without a round trip through numpy.

A net hands each layer's output tensor to its top blob. Once someone takes
a net blob's `.data` (or `.diff`), the blob keeps that memory as its buffer
(an output that is a view into other memory, such as a bottom or a user's
array, is first copied into a buffer of the blob's own, in the autograd
graph), and later outputs of the same shape are copied into it, so an array
held across a forward or backward is the live buffer, as in pycaffe; blobs
nobody looked at cost no copy. `reshape` keeps the values when the new shape fits in the
memory the blob already has (Caffe's capacity), else the new memory is zero.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from .errors import CaffeError

log = logging.getLogger(__name__)

# which copy of a SyncedTensor is newest
_DEVICE, _HOST, _SYNCED = 0, 1, 2


class SyncedTensor:
    """A float32 tensor and, off the CPU, a lazily synced host mirror."""

    __slots__ = ("tensor", "_host", "_head")

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor
        self._host: np.ndarray | None = None
        self._head = _DEVICE

    def host(self) -> np.ndarray:
        """The values as numpy, for reading and writing (marks the host newest)."""
        t = self.tensor
        if t.device.type == "cpu":
            return t.detach().numpy()
        if self._head == _DEVICE:
            if self._host is None or self._host.shape != tuple(t.shape):
                self._host = torch.empty(tuple(t.shape), dtype=t.dtype, pin_memory=True).numpy()
            torch.from_numpy(self._host).copy_(t.detach())
        self._head = _HOST
        return self._host

    def device(self) -> torch.Tensor:
        """The tensor with any host-side writes applied."""
        if self._head == _HOST:
            with torch.no_grad():
                self.tensor.copy_(torch.from_numpy(self._host), non_blocking=False)
            self._head = _SYNCED
        return self.tensor

    def device_for_write(self) -> torch.Tensor:
        """The tensor, for code that will change it on the device."""
        t = self.device()
        self._head = _DEVICE
        return t

    def replace(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor
        self._head = _DEVICE


def _resized(tensor: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor | None:
    """`tensor`'s memory viewed in `shape` when it is large enough (Caffe keeps
    a blob's memory and values when a reshape fits its capacity), else None."""
    count = int(np.prod(shape, dtype=np.int64))
    storage = tensor.untyped_storage()
    if count * tensor.element_size() > storage.nbytes() - tensor.storage_offset() * \
            tensor.element_size():
        return None
    return tensor.new_empty(0).set_(storage, tensor.storage_offset(), shape)


def _standalone(tensor: torch.Tensor) -> bool:
    """Whether `tensor` is all of its storage (not a view into other memory)."""
    return tensor._base is None and tensor.storage_offset() == 0 and \
        tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()


def _zeros(shape, device: torch.device) -> torch.Tensor:
    return torch.zeros(shape, dtype=torch.float32, device=device)


class Blob:
    """An N-d float32 array with a data and a diff, as in Caffe and pycaffe."""

    def __init__(self, shape=(), device: str | torch.device = "cpu"):
        self._shape = tuple(int(d) for d in shape)
        self._device = torch.device(device)
        self._data: SyncedTensor | None = None
        self._diff: SyncedTensor | None = None
        # activation blobs: the net keeps the gradient of a blob only once
        # someone asks for it (see Net); these flags drive that
        self._want_diff = False
        self._diff_missing = False
        # a net's blob keeps the CPU memory of the arrays it hands out (see
        # the module doc); Python layers' and standalone blobs do not
        self._live = False
        self._held_data: torch.Tensor | None = None
        self._held_diff: torch.Tensor | None = None

    # ------------------------------------------------------------ pycaffe API
    @property
    def data(self) -> np.ndarray:
        synced = self._data_synced()
        tensor = synced.tensor
        held = self._held_data
        if self._live and tensor.device.type == "cpu" and not (
                held is not None and held.data_ptr() == tensor.data_ptr()
                and held.shape == tensor.shape):
            if _standalone(tensor):
                buffer = tensor  # memory of its own (a layer's top, or ours)
            else:
                # a view into other memory (a bottom, a user's array): copy it
                # into a buffer of the blob's own, in the autograd graph
                buffer = torch.empty(tensor.shape, dtype=tensor.dtype)
                with torch.set_grad_enabled(tensor.requires_grad):
                    buffer.copy_(tensor)
                synced.replace(buffer)
            self._held_data = buffer.detach()
        return synced.host()

    @property
    def diff(self) -> np.ndarray:
        self._want_diff = True
        if self._diff_missing:
            self._diff_missing = False
            log.warning("blob diff was not kept by the last backward (this net, like a "
                        "solver's, keeps only the diffs read before, to save memory); it is "
                        "kept from the next forward on")
        synced = self._diff_synced()
        if self._live and synced.tensor.device.type == "cpu":
            self._held_diff = synced.tensor.detach()
        return synced.host()

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._data.tensor.shape) if self._data is not None else self._shape

    @property
    def count(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def _legacy_dim(self, index: int) -> int:
        shape = self.shape
        if len(shape) > 4:
            raise CaffeError(f"num/channels/height/width need a blob of at most 4 axes, "
                             f"this one has shape {list(shape)}")
        padded = shape + (1,) * (4 - len(shape))
        return padded[index]

    num = property(lambda self: self._legacy_dim(0))
    channels = property(lambda self: self._legacy_dim(1))
    height = property(lambda self: self._legacy_dim(2))
    width = property(lambda self: self._legacy_dim(3))

    def reshape(self, *shape) -> None:
        """Change the shape. As Caffe's Blob::Reshape: values stay when the new
        count fits the memory the blob has; memory newly allocated is zero."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        shape = tuple(int(d) for d in shape)
        if any(d < 0 for d in shape):
            raise CaffeError(f"Blob.reshape: negative dimension in {list(shape)}")
        self._set_shape(shape)

    @property
    def data_tensor(self) -> torch.Tensor:
        """The data as a device tensor (no numpy round trip); in-place changes to
        it are seen by numpy readers and by the next forward."""
        return self._data_synced().device_for_write().detach()

    @property
    def diff_tensor(self) -> torch.Tensor:
        """The diff as a device tensor, for solvers."""
        return self._diff_synced().device_for_write().detach()

    def __repr__(self) -> str:
        return f"Blob(shape={list(self.shape)}, device={self._device})"

    # ------------------------------------------------------------ for the net
    def _data_synced(self) -> SyncedTensor:
        if self._data is None:
            self._data = SyncedTensor(_zeros(self._shape, self._device))
        return self._data

    def _diff_synced(self) -> SyncedTensor:
        if self._diff is None:
            self._diff = SyncedTensor(_zeros(self.shape, self._device))
        return self._diff

    def _tensor(self) -> torch.Tensor:
        """The data tensor for computing, with host writes applied."""
        return self._data_synced().device()

    def _set_tensor(self, tensor: torch.Tensor) -> None:
        if self._data is None:
            self._data = SyncedTensor(tensor)
        else:
            self._data.replace(tensor)

    def _set_output(self, tensor: torch.Tensor, inputs: list[torch.Tensor]) -> torch.Tensor:
        """A layer's final output for this blob, copied into the memory of the
        `.data` array someone holds (the copy joins the autograd graph), else
        taken as it is. Never over the layer's `inputs`, which autograd may
        have saved (an in-place layer's bottom). Returns what the blob holds."""
        held = self._held_data
        if held is not None and held.shape == tensor.shape and held.device == tensor.device \
                and held.data_ptr() != tensor.data_ptr() \
                and all(held.data_ptr() != t.data_ptr() for t in inputs):
            buffer = held.detach()  # a fresh alias, so `held` never holds a graph
            buffer.copy_(tensor)
            tensor = buffer
        self._set_tensor(tensor)
        return tensor

    def _set_diff(self, tensor: torch.Tensor) -> None:
        """A computed diff, copied into the memory of a held `.diff` array."""
        held = self._held_diff
        if held is not None and held.shape == tensor.shape and held.device == tensor.device:
            if held.data_ptr() != tensor.data_ptr():
                with torch.no_grad():
                    held.copy_(tensor)
            tensor = held
        self._diff = SyncedTensor(tensor)

    def _set_shape(self, shape) -> None:
        """Reshape as Caffe does: keep the memory (and values) while the new
        count fits it, else allocate anew, lazily and zeroed."""
        shape = tuple(int(d) for d in shape)
        if shape == self.shape:
            return
        self._shape = shape
        for field in ("_data", "_diff"):
            synced = getattr(self, field)
            if synced is None:
                continue
            view = _resized(synced.device().detach(), shape)
            setattr(self, field, None if view is None else SyncedTensor(view))

    def _to(self, device: torch.device) -> None:
        self._device = device
        for synced in (self._data, self._diff):
            if synced is not None:
                synced.replace(synced.device().detach().to(device))


class ParamBlob(Blob):
    """A learnable blob: its data is a leaf tensor that layers compute with;
    its diff is that leaf's gradient, which accumulates over backward passes
    until cleared, as Caffe's param diffs do."""

    def __init__(self, leaf: torch.Tensor, synced: SyncedTensor | None = None):
        super().__init__(tuple(leaf.shape), leaf.device)
        # nets that share params (share_with) share the SyncedTensor, so a
        # host write through either blob reaches both
        self._data = synced if synced is not None else SyncedTensor(leaf)
        self.leaf = leaf
        # someone holds `.diff`: clearing zeroes the gradient in place (autograd
        # then adds into it) instead of dropping it, so the held array stays live
        self._diff_kept = False

    def reshape(self, *shape) -> None:
        if tuple(int(d) for d in (shape[0] if len(shape) == 1 and isinstance(
                shape[0], (tuple, list)) else shape)) != self.shape:
            raise CaffeError("a learnable param blob cannot be reshaped; "
                             "change the layer definition instead")

    @property
    def diff(self) -> np.ndarray:
        self._diff_kept = True
        return self._diff_synced().host()

    def _diff_synced(self) -> SyncedTensor:
        leaf = self.leaf
        if not leaf.requires_grad:
            return super()._diff_synced()
        grad = leaf.grad
        if grad is None:
            grad = leaf.grad = torch.zeros_like(leaf)
        if self._diff is None or self._diff.tensor is not grad:
            self._diff = SyncedTensor(grad)
        return self._diff

    def _clear_diff(self) -> None:
        """Zero the diff; a gradient-tracked one nobody holds is dropped so
        autograd stores the next gradient without adding to zeros."""
        tracked = self.leaf.requires_grad
        if tracked and not (self._diff_kept and self.leaf.grad is not None):
            self.leaf.grad = None
            self._diff = None
        elif tracked or self._diff is not None:
            self._diff_synced().device_for_write().zero_()

    def _set_leaf(self, leaf: torch.Tensor, synced: SyncedTensor | None = None) -> None:
        self.leaf = leaf
        self._data = synced if synced is not None else SyncedTensor(leaf)
        self._diff = None
        self._device = leaf.device
