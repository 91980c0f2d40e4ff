"""Caffe's structural and elementwise layers: Input, InnerProduct, Eltwise,
Scale, Concat, Slice, Split, Flatten, Reshape, ArgMax, Silence.

Also the small shape helpers the other layer families share.
"""
from __future__ import annotations

import math

import torch

from .. import fillers, kernel_choice
from ..errors import clip
from .base import CaffeLayer, Shape, register


# ---------------------------------------------------------------- helpers

def canonical_axis(layer: CaffeLayer, axis: int, num_axes: int, field: str = "axis") -> int:
    """Caffe's CanonicalAxisIndex: a negative axis counts from the end."""
    if not -num_axes <= axis < num_axes:
        raise layer.error(f"{field} {axis} is out of range for a blob with {num_axes} axes")
    return axis + num_axes if axis < 0 else axis


def is_in_place(layer: CaffeLayer) -> bool:
    """Whether the prototxt writes the layer's first top over its first bottom."""
    p = layer.param
    return len(p.top) > 0 and len(p.bottom) > 0 and p.top[0] == p.bottom[0]


def legacy_shape(layer: CaffeLayer, shape: Shape, what: str) -> tuple[int, int, int, int]:
    """(num, channels, height, width) as Caffe's legacy accessors read a blob
    of at most 4 axes: missing trailing axes count as 1."""
    if len(shape) > 4:
        raise layer.error(f"{what} of shape {list(shape)} has more than the 4 axes "
                          "(num, channels, height, width) this layer works on")
    return tuple(shape) + (1,) * (4 - len(shape))


def check_same_shapes(layer: CaffeLayer, bottom_shapes: list[Shape]) -> None:
    for i, shape in enumerate(bottom_shapes[1:], start=1):
        if tuple(shape) != tuple(bottom_shapes[0]):
            raise layer.error(
                f"bottom {i} has shape {list(shape)} but bottom 0 has {list(bottom_shapes[0])}"
            )


# ---------------------------------------------------------------- layers

@register("Input")
class InputLayer(CaffeLayer):
    """Net inputs: tops of the configured shapes, whose values the net sets."""

    num_bottoms = 0

    def setup(self, bottom_shapes, generator):
        shapes = self.param.input_param.shape
        n_tops = len(self.param.top)
        if len(shapes) not in (0, 1, n_tops):
            raise self.error(
                f"input_param has {len(shapes)} shapes for {n_tops} tops "
                "(give one shape, or one per top)"
            )
        self._shapes = [tuple(int(d) for d in s.dim) for s in shapes]
        if len(self._shapes) == 1:
            self._shapes = self._shapes * n_tops
        for shape in self._shapes:
            if any(d < 0 for d in shape):
                raise self.error(f"input shape {list(shape)} has a negative dimension")

    def reshape(self, bottom_shapes):
        return list(self._shapes)

    def forward(self, bottoms):
        # the net writes the input blobs itself; nothing to compute
        return list(bottoms)


@register("InnerProduct")
class InnerProductLayer(CaffeLayer):
    num_bottoms = 1
    num_tops = 1

    def setup(self, bottom_shapes, generator):
        p = self.param.inner_product_param
        if not p.HasField("num_output") or p.num_output == 0:
            raise self.error("inner_product_param.num_output must be set and positive")
        shape = bottom_shapes[0]
        self.axis = canonical_axis(self, p.axis, len(shape))
        self.num_input = math.prod(shape[self.axis:])
        self.num_output = p.num_output
        self.bias_term = p.bias_term
        self.transpose = p.transpose
        self.kernel_name: str | None = None  # the kernel the last forward ran
        weight_shape = (
            (self.num_input, self.num_output) if self.transpose else (self.num_output, self.num_input)
        )
        self.blobs = [fillers.fill(p.weight_filler, weight_shape, generator)]
        if self.bias_term:
            self.blobs.append(fillers.fill(p.bias_filler, (self.num_output,), generator))

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        axis = self.axis = canonical_axis(self, self.param.inner_product_param.axis, len(shape))
        if math.prod(shape[axis:]) != self.num_input:
            raise self.error(
                f"input of shape {list(shape)} has {math.prod(shape[axis:])} values per item "
                f"from axis {axis}, but the weights expect {self.num_input}"
            )
        return [shape[:axis] + (self.num_output,)]

    def forward(self, bottoms):
        x = bottoms[0].flatten(self.axis)
        weight = self.blobs[0].t() if self.transpose else self.blobs[0]
        bias = self.blobs[1] if self.bias_term else None
        self.kernel_name, kernel = kernel_choice.choose(
            self.name, self.type, kernel_choice.layer_work(weight, x.numel() // self.num_input),
            x, weight, bias)
        return [kernel(x, weight, bias)]


_PROD, _SUM, _MAX = 0, 1, 2  # EltwiseParameter.EltwiseOp


class _QuotientGradProduct(torch.autograd.Function):
    """The product of the bottoms with Caffe's `stable_prod_grad: false`
    gradient: bottom diff = top diff * top / bottom (inf or nan where the
    bottom is 0, as in Caffe)."""

    @staticmethod
    def forward(ctx, *bottoms):
        out = bottoms[0] * bottoms[1]
        for b in bottoms[2:]:
            out = out * b
        ctx.save_for_backward(out, *bottoms)
        return out

    @staticmethod
    def backward(ctx, grad):
        out, *bottoms = ctx.saved_tensors
        return tuple((out / b) * grad if need else None
                     for b, need in zip(bottoms, ctx.needs_input_grad))


@register("Eltwise")
class EltwiseLayer(CaffeLayer):
    num_bottoms = None
    num_tops = 1

    def setup(self, bottom_shapes, generator):
        p = self.param.eltwise_param
        if len(bottom_shapes) < 2:
            raise self.error(f"needs at least 2 bottoms, got {len(bottom_shapes)}")
        self.operation = p.operation
        if len(p.coeff) and (self.operation != _SUM or len(p.coeff) != len(bottom_shapes)):
            raise self.error(
                "coeff is allowed only for SUM and needs one value per bottom "
                f"({len(p.coeff)} given for {len(bottom_shapes)} bottoms)"
            )
        coeffs = [float(c) for c in p.coeff] or [1.0] * len(bottom_shapes)
        self.coeffs = None if all(c == 1.0 for c in coeffs) else coeffs
        self.stable_prod_grad = p.stable_prod_grad

    def reshape(self, bottom_shapes):
        check_same_shapes(self, bottom_shapes)
        return [tuple(bottom_shapes[0])]

    def forward(self, bottoms):
        if self.operation == _SUM:
            if self.coeffs is None:
                out = bottoms[0] + bottoms[1]
                for b in bottoms[2:]:
                    out = out + b
            else:
                out = bottoms[0] * self.coeffs[0]
                for b, c in zip(bottoms[1:], self.coeffs[1:]):
                    out = torch.add(out, b, alpha=c)
        elif self.operation == _PROD:
            if not self.stable_prod_grad:
                return [_QuotientGradProduct.apply(*bottoms)]
            # autograd's product rule is Caffe's stable_prod_grad
            out = bottoms[0] * bottoms[1]
            for b in bottoms[2:]:
                out = out * b
        else:
            # Caffe's tie rule: between the first two bottoms a tie goes to the
            # second; a later bottom wins only when strictly greater. torch.where
            # routes the gradient to the chosen bottom, as Caffe's mask does.
            out = torch.where(bottoms[0] > bottoms[1], bottoms[0], bottoms[1])
            for b in bottoms[2:]:
                out = torch.where(b > out, b, out)
        return [out]


@register("Scale")
class ScaleLayer(CaffeLayer):
    """top = bottom * scale (+ bias), the scale broadcast over
    `axis .. axis+num_axes`; the scale is a learned blob (one bottom) or the
    second bottom."""

    num_bottoms = (1, 2)
    num_tops = 1

    def setup(self, bottom_shapes, generator):
        p = self.param.scale_param
        shape = bottom_shapes[0]
        axis = canonical_axis(self, p.axis, len(shape))
        self.blobs = []
        if len(bottom_shapes) == 1:
            if p.num_axes < -1:
                raise self.error(f"scale_param.num_axes must be >= -1, got {p.num_axes}")
            end = len(shape) if p.num_axes == -1 else axis + p.num_axes
            if end > len(shape):
                raise self.error(
                    f"scale blob would span axes {axis}..{end - 1} of a {len(shape)}-axis bottom"
                )
            scale_shape = tuple(shape[axis:end])
            # Caffe's default scale filler is constant 1, not the usual 0
            if p.HasField("filler"):
                self.blobs.append(fillers.fill(p.filler, scale_shape, generator))
            else:
                self.blobs.append(torch.ones(scale_shape, dtype=torch.float32))
        else:
            scale_shape = tuple(bottom_shapes[1])
        self.bias_term = p.bias_term
        if self.bias_term:
            self.blobs.append(fillers.fill(p.bias_filler, scale_shape, generator))

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        scale_shape = tuple(bottom_shapes[1]) if len(bottom_shapes) > 1 else tuple(self.blobs[0].shape)
        axis = canonical_axis(self, self.param.scale_param.axis, len(shape))
        if shape[axis:axis + len(scale_shape)] != scale_shape:
            raise self.error(
                f"scale of shape {list(scale_shape)} does not match bottom {list(shape)} "
                f"from axis {axis}"
            )
        self._view = scale_shape + (1,) * (len(shape) - axis - len(scale_shape))
        return [shape]

    def forward(self, bottoms):
        x = bottoms[0]
        scale = bottoms[1] if len(bottoms) > 1 else self.blobs[0]
        scale = scale.reshape(self._view)
        if self.bias_term:
            return [torch.addcmul(self.blobs[-1].reshape(self._view), x, scale)]
        return [x * scale]


def _concat_axis(layer: CaffeLayer, p, legacy_field: str, num_axes: int) -> int:
    """`axis`, or the legacy uint field (concat_dim / slice_dim) when that is set."""
    if p.HasField(legacy_field):
        if p.HasField("axis"):
            raise layer.error(f"set either axis or {legacy_field}, not both")
        legacy = getattr(p, legacy_field)
        if legacy >= num_axes:
            raise layer.error(f"{legacy_field} {legacy} is out of range for {num_axes} axes")
        return legacy
    return canonical_axis(layer, p.axis, num_axes)


@register("Concat")
class ConcatLayer(CaffeLayer):
    num_bottoms = None
    num_tops = 1

    def reshape(self, bottom_shapes):
        if not bottom_shapes:
            raise self.error("needs at least one bottom")
        first = tuple(bottom_shapes[0])
        self.axis = _concat_axis(self, self.param.concat_param, "concat_dim", len(first))
        total = 0
        for i, shape in enumerate(bottom_shapes):
            shape = tuple(shape)
            if len(shape) != len(first) or (
                shape[:self.axis] + shape[self.axis + 1:] != first[:self.axis] + first[self.axis + 1:]
            ):
                raise self.error(
                    f"bottom {i} of shape {list(shape)} does not match bottom 0 {list(first)} "
                    f"outside the concat axis {self.axis}"
                )
            total += shape[self.axis]
        return [first[:self.axis] + (total,) + first[self.axis + 1:]]

    def forward(self, bottoms):
        if len(bottoms) == 1:
            return [bottoms[0]]
        return [torch.cat(bottoms, dim=self.axis)]


@register("Slice")
class SliceLayer(CaffeLayer):
    num_bottoms = 1
    num_tops = None

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        p = self.param.slice_param
        self.axis = _concat_axis(self, p, "slice_dim", len(shape))
        n_tops = len(self.param.top)
        extent = shape[self.axis]
        points = list(p.slice_point)
        if points:
            if len(points) != n_tops - 1:
                raise self.error(f"{len(points)} slice_point values for {n_tops} tops (need {n_tops - 1})")
            bounds = [0] + points + [extent]
            if any(b <= a for a, b in zip(bounds[:-1], bounds[1:])):
                raise self.error(f"slice_point {points} must increase strictly within (0, {extent})")
            self.sizes = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
        else:
            if n_tops == 0 or extent % n_tops:
                raise self.error(f"axis {self.axis} of extent {extent} does not split into {n_tops} equal tops")
            self.sizes = [extent // n_tops] * n_tops
        return [shape[:self.axis] + (s,) + shape[self.axis + 1:] for s in self.sizes]

    def forward(self, bottoms):
        if len(self.sizes) == 1:
            return [bottoms[0]]
        # Caffe's tops are copies, not views of the bottom
        return [t.clone(memory_format=torch.preserve_format)
                for t in torch.split(bottoms[0], self.sizes, dim=self.axis)]


@register("Split")
class SplitLayer(CaffeLayer):
    """Every top is the bottom; autograd sums the gradients as Caffe does."""

    num_bottoms = 1
    num_tops = None

    def setup(self, bottom_shapes, generator):
        # Caffe's SplitLayer: MinTopBlobs 1, and its Reshape CHECKs top != bottom
        if not len(self.param.top):
            raise self.error("needs at least one top blob")
        if len(self.param.bottom) and self.param.bottom[0] in self.param.top:
            raise self.error("Split Layer does not allow in-place computation "
                             f"(top '{clip(self.param.bottom[0])}' is its bottom)")

    def reshape(self, bottom_shapes):
        return [tuple(bottom_shapes[0])] * len(self.param.top)

    def forward(self, bottoms):
        return [bottoms[0]] * len(self.param.top)


@register("Flatten")
class FlattenLayer(CaffeLayer):
    num_bottoms = 1
    num_tops = 1

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        p = self.param.flatten_param
        start = canonical_axis(self, p.axis, len(shape))
        end = canonical_axis(self, p.end_axis, len(shape), "end_axis")
        if end < start:
            raise self.error(f"end_axis {p.end_axis} comes before axis {p.axis}")
        self.top_shape = shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:]
        return [self.top_shape]

    def forward(self, bottoms):
        return [bottoms[0].reshape(self.top_shape)]


@register("Reshape")
class ReshapeLayer(CaffeLayer):
    """Dims of reshape_param.shape replace bottom axes axis..axis+num_axes;
    0 copies the bottom's extent, one -1 is inferred."""

    num_bottoms = 1
    num_tops = 1

    def setup(self, bottom_shapes, generator):
        dims = list(self.param.reshape_param.shape.dim)
        if dims.count(-1) > 1:
            raise self.error("reshape_param.shape may contain at most one -1")
        if any(d < -1 for d in dims):
            raise self.error(f"reshape_param.shape {dims} has a dimension below -1")

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        p = self.param.reshape_param
        dims = list(p.shape.dim)
        n = len(shape)
        start = p.axis if p.axis >= 0 else n + p.axis + 1
        if not 0 <= start <= n:
            raise self.error(f"reshape_param.axis {p.axis} is out of range for {n} axes")
        if p.num_axes < -1:
            raise self.error(f"reshape_param.num_axes must be >= -1, got {p.num_axes}")
        end = n if p.num_axes == -1 else start + p.num_axes
        if end > n:
            raise self.error(f"axis {p.axis} + num_axes {p.num_axes} exceeds the bottom's {n} axes")
        middle = []
        for i, d in enumerate(dims):
            if d == 0:
                if start + i >= n:
                    raise self.error(f"dim {i} is 0 but the bottom has no axis {start + i} to copy")
                middle.append(shape[start + i])
            else:
                middle.append(d)
        if -1 in middle:
            known = math.prod(shape[:start]) * math.prod(shape[end:]) * math.prod(d for d in middle if d != -1)
            if known == 0 or math.prod(shape) % known:
                raise self.error(f"cannot infer the -1 dim of {dims} for bottom {list(shape)}")
            middle[middle.index(-1)] = math.prod(shape) // known
        top = shape[:start] + tuple(middle) + shape[end:]
        if math.prod(top) != math.prod(shape):
            raise self.error(
                f"top shape {list(top)} has {math.prod(top)} values, bottom {list(shape)} has {math.prod(shape)}"
            )
        self.top_shape = top
        return [top]

    def forward(self, bottoms):
        return [bottoms[0].reshape(self.top_shape)]


@register("ArgMax")
class ArgMaxLayer(CaffeLayer):
    """Indices (or values) of the top_k largest entries; ties go to the larger
    index, as Caffe's sort of (value, index) pairs does."""

    num_bottoms = 1
    num_tops = 1

    def setup(self, bottom_shapes, generator):
        p = self.param.argmax_param
        if p.top_k < 1:
            raise self.error("argmax_param.top_k must be at least 1")
        self.top_k = p.top_k
        self.out_max_val = p.out_max_val
        self.has_axis = p.HasField("axis")

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        if self.has_axis:
            self.axis = canonical_axis(self, self.param.argmax_param.axis, len(shape))
            extent = shape[self.axis]
            top = shape[:self.axis] + (self.top_k,) + shape[self.axis + 1:]
        else:
            extent = math.prod(shape[1:])
            # Caffe's shape: (N, 1 or 2, top_k), padded with 1s to the bottom's axes
            top = (shape[0], 2 if self.out_max_val else 1, self.top_k) + (1,) * (len(shape) - 3)
        if self.top_k > extent:
            raise self.error(f"top_k {self.top_k} exceeds the {extent} values it ranks")
        self.top_shape = top
        return [top]

    def forward(self, bottoms):
        x = bottoms[0].detach()
        if self.has_axis:
            values, indices = self._top_k(x, self.axis)
            out = values if self.out_max_val else indices.to(x.dtype)
            return [out]
        flat = x.reshape(x.shape[0], -1)
        values, indices = self._top_k(flat, 1)
        parts = [indices.to(x.dtype)] + ([values] if self.out_max_val else [])
        top = torch.stack(parts, dim=1)
        return [top.reshape(self.top_shape)]

    def _top_k(self, x: torch.Tensor, dim: int):
        extent = x.shape[dim]
        # a stable descending sort of the reversed axis puts the larger index
        # first among equal values
        values, rev_idx = torch.sort(x.flip(dim), dim=dim, descending=True, stable=True)
        keep = slice(0, self.top_k)
        index = [slice(None)] * x.dim()
        index[dim] = keep
        return values[tuple(index)], (extent - 1) - rev_idx[tuple(index)]


@register("Silence")
class SilenceLayer(CaffeLayer):
    """Consumes its bottoms; no tops, zero gradient."""

    num_bottoms = None
    num_tops = 0

    def reshape(self, bottom_shapes):
        return []

    def forward(self, bottoms):
        return []
