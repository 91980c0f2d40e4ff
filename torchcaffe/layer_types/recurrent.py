"""Caffe's recurrent layers: RNN, LSTM and the LSTMUnit step they build on.

Caffe runs RNN / LSTM by unrolling a small net over the T timesteps of the
bottom; here the recurrence runs directly in torch with the same blobs (order,
shapes, fillers) and the same arithmetic, so caffemodels load unchanged.

Bottoms: x (T x N x ...), cont (T x N; 0 starts a new sequence in that
stream), an optional static input x_static (N x ...), and with
`expose_hidden` the initial states (1 x N x num_output each: h0, then c0
for LSTM). Tops: the outputs (T x N x num_output) and, with `expose_hidden`,
the final states. Without `expose_hidden` the final states of one forward
are the initial states of the next (zero at first), as in Caffe. Gradients
flow only from the outputs and stop at the initial states: Caffe shares the
exposed state blobs' data but not their diffs.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import fillers
from .base import CaffeLayer, Shape, register


class _RecurrentLayer(CaffeLayer):
    num_bottoms = None
    num_tops = None
    #: the recurrent state blobs, in Caffe's order
    state_names: tuple[str, ...] = ()

    def setup(self, bottom_shapes, generator):
        p = self.param.recurrent_param
        if p.num_output <= 0:
            raise self.error("recurrent_param.num_output must be set and positive")
        self.num_output = p.num_output
        self.expose_hidden = p.expose_hidden
        exposed = len(self.state_names) if self.expose_hidden else 0
        if not 2 + exposed <= len(bottom_shapes) <= 3 + exposed:
            states = " and ".join(self.state_names)
            raise self.error(
                f"takes x, cont, an optional static input{', then ' + states if exposed else ''}: "
                f"{2 + exposed} or {3 + exposed} bottoms, {len(bottom_shapes)} given")
        if len(self.param.top) != 1 + exposed:
            raise self.error(f"takes {1 + exposed} top(s) (the output"
                             f"{' and the final ' + ', '.join(self.state_names) if exposed else ''}), "
                             f"{len(self.param.top)} given")
        self.static_input = len(bottom_shapes) > 2 + exposed
        x_shape = tuple(bottom_shapes[0])
        if len(x_shape) < 2:
            raise self.error(f"x of shape {list(x_shape)} needs at least 2 axes (timesteps, streams, ...)")
        self.timesteps = x_shape[0]
        static_shape = tuple(bottom_shapes[2]) if self.static_input else None
        if static_shape is not None and len(static_shape) < 1:
            raise self.error("the static input needs at least 1 axis (streams, ...)")
        self.blobs = self.make_blobs(p, math.prod(x_shape[2:]),
                                     static_shape and math.prod(static_shape[1:]), generator)
        self._carried: list[torch.Tensor] | None = None

    def make_blobs(self, p, x_dim: int, static_dim: int | None,
                   generator: torch.Generator) -> list[torch.Tensor]:
        raise NotImplementedError

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != 1  # Caffe never sends a diff to cont

    def reshape(self, bottom_shapes):
        x_shape, cont_shape = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        if len(x_shape) < 2 or x_shape[0] != self.timesteps:
            raise self.error(f"x of shape {list(x_shape)} must keep the {self.timesteps} "
                             "timesteps the layer was set up with")
        streams = x_shape[1]
        if cont_shape != (self.timesteps, streams):
            raise self.error(f"cont of shape {list(cont_shape)} must be (timesteps, streams) = "
                             f"{[self.timesteps, streams]}")
        input_dim = self.blobs[0].shape[1]
        if math.prod(x_shape[2:]) != input_dim:
            raise self.error(f"x of shape {list(x_shape)} has {math.prod(x_shape[2:])} values per "
                             f"step and stream; the weights expect {input_dim}")
        if self.static_input:
            static = tuple(bottom_shapes[2])
            if static[0] != streams:
                raise self.error(f"the static input of shape {list(static)} must have the "
                                 f"{streams} streams on axis 0")
        state_shape = (1, streams, self.num_output)
        if self.expose_hidden:
            for name, shape in zip(self.state_names, bottom_shapes[-len(self.state_names):]):
                if tuple(shape) != state_shape:
                    raise self.error(f"initial {name} of shape {list(shape)} must be {list(state_shape)}")
        tops: list[Shape] = [(self.timesteps, streams, self.num_output)]
        if self.expose_hidden:
            tops += [state_shape] * len(self.state_names)
        return tops

    def forward(self, bottoms):
        x, cont = bottoms[0], bottoms[1].detach()
        static = bottoms[2] if self.static_input else None
        shape = (1, x.shape[1], self.num_output)
        if self.expose_hidden:
            # Caffe shares only the data of the exposed states: no gradient
            # enters h0 / c0 and the diffs of the final-state tops are unused
            initial = [s.detach() for s in bottoms[-len(self.state_names):]]
        elif self._carried is not None and all(
                s.shape == shape and s.device == x.device for s in self._carried):
            initial = self._carried
        else:
            initial = [x.new_zeros(shape) for _ in self.state_names]
        output, final = self.unroll(x.flatten(2), cont, static, [s[0] for s in initial])
        final = [s.detach().unsqueeze(0) for s in final]
        if not self.expose_hidden:
            self._carried = final
            return [output]
        return [output] + final

    def static_term(self, static: torch.Tensor | None, weight: torch.Tensor) -> torch.Tensor | None:
        return None if static is None else F.linear(static.flatten(1), weight)

    def unroll(self, x, cont, static, states):
        """(outputs T x N x num_output, final states N x num_output each)."""
        raise NotImplementedError


def _fill_weights(p, rows: int, x_dim: int, static_dim: int | None, recurrent_dim: int,
                  generator: torch.Generator) -> list[torch.Tensor]:
    """The input transform (weight, bias), the static transform (if any) and
    the recurrent weight, filled in Caffe's order."""
    blobs = [fillers.fill(p.weight_filler, (rows, x_dim), generator),
             fillers.fill(p.bias_filler, (rows,), generator)]
    if static_dim is not None:
        blobs.append(fillers.fill(p.weight_filler, (rows, static_dim), generator))
    blobs.append(fillers.fill(p.weight_filler, (rows, recurrent_dim), generator))
    return blobs


@register("RNN")
class RNNLayer(_RecurrentLayer):
    """h_t = tanh(W_hh (cont_t h_{t-1}) + W_xh x_t + b_h [+ W_xh_static x_static]);
    o_t = tanh(W_ho h_t + b_o). Blobs: W_xh, b_h, [W_xh_static], W_hh, W_ho, b_o."""

    state_names = ("h",)

    def make_blobs(self, p, x_dim, static_dim, generator):
        h = self.num_output
        blobs = _fill_weights(p, h, x_dim, static_dim, h, generator)
        blobs.append(fillers.fill(p.weight_filler, (h, h), generator))
        blobs.append(fillers.fill(p.bias_filler, (h,), generator))
        return blobs

    def unroll(self, x, cont, static, states):
        w_xh, b_h = self.blobs[0], self.blobs[1]
        w_hh, w_ho, b_o = self.blobs[-3:]
        x_term = F.linear(x, w_xh, b_h)
        static_term = self.static_term(static, self.blobs[2]) if self.static_input else None
        (h,) = states
        outputs = []
        for t in range(self.timesteps):
            pre = F.linear(h * cont[t].unsqueeze(-1), w_hh) + x_term[t]
            if static_term is not None:
                pre = pre + static_term
            h = torch.tanh(pre)
            outputs.append(torch.tanh(F.linear(h, w_ho, b_o)))
        return torch.stack(outputs), [h]


@register("LSTM")
class LSTMLayer(_RecurrentLayer):
    """gates_t = W_hc (cont_t h_{t-1}) + W_xc x_t + b_c [+ W_xc_static x_static]
    (rows i, f, o, g), then one LSTMUnit step gives c_t and h_t; the outputs
    are the h_t. Blobs: W_xc, b_c, [W_xc_static], W_hc."""

    state_names = ("h", "c")

    def make_blobs(self, p, x_dim, static_dim, generator):
        return _fill_weights(p, 4 * self.num_output, x_dim, static_dim, self.num_output, generator)

    def unroll(self, x, cont, static, states):
        w_xc, b_c, w_hc = self.blobs[0], self.blobs[1], self.blobs[-1]
        x_term = F.linear(x, w_xc, b_c)
        static_term = self.static_term(static, self.blobs[2]) if self.static_input else None
        h, c = states
        outputs = []
        for t in range(self.timesteps):
            cont_t = cont[t].unsqueeze(-1)
            gates = F.linear(h * cont_t, w_hc) + x_term[t]
            if static_term is not None:
                gates = gates + static_term
            c, h = _LSTMStep.apply(c, gates, cont_t)
            outputs.append(h)
        return torch.stack(outputs), [h, c]


class _LSTMStep(torch.autograd.Function):
    """One LSTM cell step with Caffe's LSTMUnit arithmetic: i, f, o =
    sigmoid, g = tanh of the four gate blocks; f is scaled by cont (exactly 0
    where cont is 0); c = f c_prev + i g, h = o tanh(c). Caffe differentiates
    the forget gate through the cont-scaled value (f (1 - f)), which differs
    from the calculus when cont is neither 0 nor 1; cont gets no gradient."""

    @staticmethod
    def forward(ctx, c_prev, gates, cont):
        i, f, o, g = gates.chunk(4, dim=-1)
        i, f, o, g = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o), torch.tanh(g)
        f = torch.where(cont == 0, torch.zeros_like(f), cont * f)
        c = f * c_prev + i * g
        tanh_c = torch.tanh(c)
        h = o * tanh_c
        ctx.save_for_backward(c_prev, i, f, o, g, tanh_c)
        return c, h

    @staticmethod
    def backward(ctx, grad_c, grad_h):
        c_prev, i, f, o, g, tanh_c = ctx.saved_tensors
        c_term = grad_c + grad_h * o * (1 - tanh_c * tanh_c)
        grad_gates = torch.cat([c_term * g * i * (1 - i),
                                c_term * c_prev * f * (1 - f),
                                grad_h * tanh_c * o * (1 - o),
                                c_term * i * (1 - g * g)], dim=-1)
        return c_term * f, grad_gates, None


@register("LSTMUnit")
class LSTMUnitLayer(CaffeLayer):
    """One LSTM step: bottoms c_prev (1 x N x H), gates (1 x N x 4H, rows
    i, f, o, g), cont (1 x N); tops c and h (1 x N x H)."""

    num_bottoms = 3
    num_tops = 2

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != 2

    def reshape(self, bottom_shapes):
        c_prev, gates, cont = (tuple(s) for s in bottom_shapes)
        if len(c_prev) != 3 or len(gates) != 3 or len(cont) != 2:
            raise self.error(f"bottoms c_prev {list(c_prev)}, gates {list(gates)} need 3 axes "
                             f"and cont {list(cont)} 2")
        streams = c_prev[1]
        if any(s[0] != 1 or s[1] != streams for s in (c_prev, gates, cont)):
            raise self.error(f"every bottom must be one timestep of {streams} streams: c_prev "
                             f"{list(c_prev)}, gates {list(gates)}, cont {list(cont)}")
        if gates[2] != 4 * c_prev[2]:
            raise self.error(f"gates of shape {list(gates)} must have 4 x {c_prev[2]} values "
                             "per stream (i, f, o, g)")
        return [c_prev, c_prev]

    def forward(self, bottoms):
        c_prev, gates, cont = bottoms
        c, h = _LSTMStep.apply(c_prev, gates, cont.detach().unsqueeze(-1))
        return [c, h]
