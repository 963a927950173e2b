"""A per-channel weight observer that minimises the error of the layer's *output*.

Min/max weight ranges minimise the worst-case error of each weight; what matters is the
error of the layer's output ``y = W x``. For one output channel with weights ``w`` and
quantized weights ``ŵ(s)`` at scale ``s``, the expected squared output error over the inputs
seen in calibration is::

    err(s) = (ŵ(s) - w)ᵀ H (ŵ(s) - w),        H = E[x xᵀ]

where ``x`` ranges over the input vectors the channel's weights multiply (input patches for a
convolution). :class:`PerChannelOutputMSEObserver` searches each channel's clipping range
``r · max|w|`` over a grid of ``r`` in ``[0.5, 1]`` (``r = 1`` is min/max, so the result is never
worse on this objective) and keeps the best. It matters for BN-folded CNN weights, whose
large weights often cancel on correlated inputs (neighbouring pixels): for EfficientNet-Lite0
the logits SQNR with weight quantization alone goes from 18.5 dB (min/max) to 24 dB.

``H`` comes from the layer's input activation observer: the quantizer's
``prepare_obs_or_fq_callback`` calls :func:`link_output_aware_weight_observers`, which gives
each such weight observer a :class:`LayerInputMoments` and registers it as a forward pre-hook
of the observer on the same layer's input edge, so calibration accumulates ``H`` as it runs.
Without input statistics (not linked, a layer kind it does not know, a weight shared by two
layers) the observer gives exactly :class:`~fxquant.observers.PerChannelMinMaxObserver`'s
parameters.

Everything the search needs is module state, so calibration survives ``state_dict()`` /
``load_state_dict()`` into a freshly prepared model: ``H`` and its row count are buffers of
the :class:`LayerInputMoments` (a submodule of the weight observer, and in FX of the input
observer too), and the observed weight is the observer's ``observed_weight`` buffer (empty
until the observer sees the weight, resized on load like ``min_val``). In memory it shares
its storage with the weight, so ``torch.save`` of the state dict does not store it twice.

The search costs ``K²`` per channel and candidate ratio (``K`` = input vector length), so it
is organised to waste nothing: every candidate of a stage in a few large matmuls, on a
Cholesky factor of ``H`` (``‖Lᵀδ‖²``, computed in column blocks that skip its zero half) or
a pivoted-Cholesky low-rank factor when calibration saw fewer input vectors than ``K/2``,
without re-evaluating ratios already seen. It chooses exactly the scales of a plain
sequential float64 search: float32 errors that are too close to call are compared again in
float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import Node

from fxquant.observers import PerChannelMinMaxObserver

__all__ = [
    "LayerGeometry",
    "LayerInputMoments",
    "PerChannelOutputMSEObserver",
    "layer_geometry",
    "link_layer_input",
    "link_output_aware_weight_observers",
]

_aten = torch.ops.aten

# Input vectors accumulated into H per calibration batch (a strided subsample beyond that).
_MAX_ROWS_PER_BATCH = 8192
# Unfolded elements per batch (bounds memory for wide depthwise convs).
_MAX_ELEMENTS_PER_BATCH = 1 << 24
# Layers with longer input vectors keep min/max weights (H would need K*K doubles).
_MAX_FEATURES = 4096
# Clipping ratios searched: r = 1 (min/max), a coarse grid down to _MIN_RATIO, then steps of
# 0.01 around each channel's best.
_MIN_RATIO = 0.5
_COARSE_RATIOS = [0.95 - 0.05 * i for i in range(10)]
_FINE_OFFSETS = [d / 100 for d in (-4, -3, -2, -1, 1, 2, 3, 4)]
# Candidate weight elements (candidates x channels x features) per batched error matmul.
_MAX_BATCH_ELEMENTS = 1 << 22
# Candidates whose float32 errors lie within this relative distance of their channel's best
# are compared again in float64.
_TIE_RTOL = 1e-3
# The search runs on a low-rank factor of H only up to this rank (the factorization is a
# Python loop of `rank` steps).
_MAX_LOW_RANK = 512
# Column blocks of the Cholesky factor per evaluation (more blocks skip more of its zeros,
# in narrower matmuls).
_CHOLESKY_BLOCKS = 8


@dataclass(frozen=True, kw_only=True)
class LayerGeometry:
    """How a conv (1d/2d) or linear layer turns its input into the vectors its weights
    multiply: ``groups`` groups of ``features``-long vectors."""

    input_shape: tuple[int, ...]  # without the batch dimension (linear: the feature dims)
    groups: int
    features: int
    kernel_size: tuple[int, ...] = ()  # empty for linear
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] = ()
    dilation: tuple[int, ...] = ()

    @property
    def is_conv(self) -> bool:
        return bool(self.kernel_size)


def _op_arg(node: Node, index: int) -> Any:
    """Argument ``index`` of an aten call: positional, keyword, or the schema default."""
    if index < len(node.args):
        return node.args[index]
    argument = node.target._schema.arguments[index]  # type: ignore[union-attr]  # aten OpOverload
    return node.kwargs.get(argument.name, argument.default_value)


def _pair(value: Any, n: int) -> tuple[int, ...]:
    values = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    return values * n if len(values) == 1 else values


def layer_geometry(op: Node) -> LayerGeometry | None:
    """The geometry of a conv1d/conv2d/linear node, or None for anything else (or when its
    shapes are unknown)."""
    act, weight = op.args[0], op.args[1]
    act_val = act.meta.get("val") if isinstance(act, Node) else None
    weight_val = weight.meta.get("val") if isinstance(weight, Node) else None
    if not isinstance(act_val, torch.Tensor) or not isinstance(weight_val, torch.Tensor):
        return None
    shape = tuple(int(d) for d in act_val.shape[1:])
    features = math.prod(int(d) for d in weight_val.shape[1:])
    if op.target == _aten.linear.default:
        return LayerGeometry(input_shape=shape, groups=1, features=features)
    if op.target not in (_aten.conv1d.default, _aten.conv2d.default):
        return None
    n = 1 if op.target == _aten.conv1d.default else 2
    return LayerGeometry(
        input_shape=shape,
        groups=int(_op_arg(op, 6)),
        features=features,
        kernel_size=tuple(int(d) for d in weight_val.shape[2:]),
        stride=_pair(_op_arg(op, 3), n),
        padding=_pair(_op_arg(op, 4), n),
        dilation=_pair(_op_arg(op, 5), n),
    )


class LayerInputMoments(nn.Module):
    """Accumulates ``H = Σ x xᵀ`` (per group) over the input vectors of one layer.

    Used as a forward pre-hook (:meth:`hook`) of an observer that sees the layer's input.
    Tensors of another shape (the observer may be shared with other edges) are ignored.
    """

    hessian: torch.Tensor
    rows: torch.Tensor

    def __init__(self, geometry: LayerGeometry) -> None:
        super().__init__()
        self.geometry = geometry
        g, k = geometry.groups, geometry.features
        self.register_buffer("hessian", torch.zeros(g, k, k, dtype=torch.float64))
        self.register_buffer("rows", torch.zeros((), dtype=torch.float64))

    def extra_repr(self) -> str:
        return f"groups={self.geometry.groups}, features={self.geometry.features}, rows={int(self.rows)}"

    def hook(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        """Forward pre-hook: record the observed input."""
        x = args[0] if args else None
        if isinstance(x, torch.Tensor):
            self.record(x)

    @torch.no_grad()
    def record(self, x: torch.Tensor) -> None:
        geometry = self.geometry
        if x.dim() != len(geometry.input_shape) + 1 or tuple(x.shape[1:]) != geometry.input_shape or x.numel() == 0:
            return
        vectors = self._vectors(x.detach().float())  # (groups, rows, features)
        self.hessian += (vectors.transpose(1, 2) @ vectors).double()
        self.rows += vectors.shape[1]

    def _vectors(self, x: torch.Tensor) -> torch.Tensor:
        """A subsample of the input vectors: (groups, rows, features)."""
        geometry = self.geometry
        g, k = geometry.groups, geometry.features
        max_rows = max(1, min(_MAX_ROWS_PER_BATCH, _MAX_ELEMENTS_PER_BATCH // (g * k)))
        if not geometry.is_conv:
            flat = x.reshape(-1, k)
            return flat[:: max(1, math.ceil(flat.shape[0] / max_rows))].unsqueeze(0)
        kernel, stride = geometry.kernel_size, geometry.stride
        padding, dilation = geometry.padding, geometry.dilation
        if len(kernel) == 1:  # conv1d as a conv2d of height 1
            x = x.unsqueeze(2)
            kernel, stride, padding, dilation = (1, *kernel), (1, *stride), (0, *padding), (1, *dilation)
        # Sample output positions on a coarser grid (a multiple of the stride), so only the
        # sampled patches are unfolded.
        positions = x.shape[0] * math.prod(
            (size + 2 * p - d * (kk - 1) - 1) // s + 1
            for size, kk, s, p, d in zip(x.shape[2:], kernel, stride, padding, dilation)
        )
        step = max(1, math.ceil(math.sqrt(positions / max_rows)))
        sampled_stride = tuple(s * step for s in stride)
        cols = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=sampled_stride)  # (N, g*k, L)
        cols = cols.reshape(x.shape[0], g, k, -1).permute(1, 0, 3, 2).reshape(g, -1, k)
        return cols[:, :: max(1, math.ceil(cols.shape[1] / max_rows))]


class PerChannelOutputMSEObserver(PerChannelMinMaxObserver):
    """Per-channel symmetric weight observer choosing each output channel's clipping range
    to minimise the layer's expected squared output error (see the module docs).

    Same constructor as :class:`~fxquant.observers.PerChannelMinMaxObserver`, plus
    ``search`` (False: plain min/max). Records min/max like it; the search runs in
    :meth:`calculate_qparams` once :attr:`input_moments` holds calibration statistics.
    """

    input_moments: LayerInputMoments | None
    observed_weight: torch.Tensor

    def __init__(self, *args: Any, search: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.search = search
        self.input_moments = None
        # empty until the observer sees the weight (a view of it: no copy)
        self.register_buffer("observed_weight", torch.tensor([], device=self.min_val.device))
        self._shared_by_layers = False

    def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
        self.observed_weight = x_orig.detach()
        return super().forward(x_orig)

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # The buffer starts empty (and may be a view of the weight): load into a tensor of
        # the saved shape.
        key = prefix + "observed_weight"
        if key in state_dict:
            saved = state_dict[key]
            self.observed_weight = torch.empty(saved.shape, dtype=saved.dtype, device=self.observed_weight.device)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def link(self, moments: LayerInputMoments) -> None:
        """Use ``moments`` as the input statistics of the (one) layer this weight feeds."""
        if self.input_moments is not None and self.input_moments is not moments:
            self._shared_by_layers = True  # one weight, several layers: no single H
        self.input_moments = moments

    def _can_search(self) -> bool:
        moments = self.input_moments
        return (
            self.search
            and not self._shared_by_layers
            and moments is not None
            and float(moments.rows) > 0
            and self.observed_weight.dim() > 1
            and self.ch_axis == 0
            and self.qscheme == torch.per_channel_symmetric
            and self.min_val.numel() == self.observed_weight.shape[0]
        )

    @torch.no_grad()
    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]  # no kwargs
        if not self._can_search():
            return super().calculate_qparams()
        assert self.input_moments is not None
        moments, weight = self.input_moments, self.observed_weight
        amax = torch.maximum(-self.min_val, self.max_val)
        search = _ClipSearch(
            weight=weight.float().reshape(weight.shape[0], -1),
            amax=amax,
            hessian=moments.hessian / moments.rows,
            rows=int(moments.rows),
            observer=self,
        )
        clip = amax * search.best_ratios()
        return self._calculate_qparams(-clip, clip)

    def extra_repr(self) -> str:
        linked = self.input_moments is not None and not self._shared_by_layers
        return f"{super().extra_repr()}, search={self.search}, input_statistics={linked}"


class _ClipSearch:
    """The clipping-ratio search of one layer, all channels and all ratios of a stage at once.

    Each stage has candidate ratios ``(n, O)`` (the coarse grid; then each channel's best
    and its neighbours, a ratio clamped onto one already evaluated skipped). The candidate
    weights are fake-quantized and their ``δᵀ H δ`` evaluated (float32, see
    :class:`_QuadraticForm`) a bounded batch at a time. A channel takes its first candidate
    (in search order) of least error, as a sequential search with a strict ``<`` does.
    Candidates whose float32 errors are within ``_TIE_RTOL`` of the channel's best (float32
    is within 2e-5 of float64 on EfficientNet-Lite0's layers) are compared again in float64
    on ``H`` itself, so round-off never decides between two close candidates.
    """

    def __init__(self, *, weight: torch.Tensor, amax: torch.Tensor, hessian: torch.Tensor, rows: int,
                 observer: PerChannelMinMaxObserver) -> None:
        self.weight, self.amax, self.hessian = weight, amax, hessian  # hessian: (g, K, K) float64
        self.groups = hessian.shape[0]
        self.observer = observer
        self.form = _quadratic_form(hessian, rows)

    def best_ratios(self) -> torch.Tensor:
        """Each channel's clipping ratio: the coarse grid (with ``r = 1`` first), then steps
        of 0.01 around each channel's best."""
        coarse = torch.tensor([1.0, *_COARSE_RATIOS], dtype=self.amax.dtype).unsqueeze(1)
        best, best_error = self._choose(coarse.expand(-1, self.amax.numel()), None)
        offsets = torch.tensor(_FINE_OFFSETS, dtype=self.amax.dtype).unsqueeze(1)
        fine = (best + offsets).clamp(_MIN_RATIO, 1.0)
        # the center first: it wins ties, and a clamped candidate equal to it adds nothing
        return self._choose(torch.cat([best.unsqueeze(0), fine]), best_error)[0]

    def _choose(self, ratios: torch.Tensor, first_errors: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ratio (along dim 0) of least output error per channel, and its (float32)
        error: two ``(O,)`` tensors. ``first_errors``: the known errors of ``ratios[0]``."""
        scale, zero_point = self._qparams(ratios)
        wanted = torch.ones_like(ratios, dtype=torch.bool)
        for i in range(1, ratios.shape[0]):  # a ratio seen earlier in the list cannot win
            wanted[i] = ~(ratios[:i] == ratios[i]).any(0)
        if first_errors is not None:
            wanted[0] = False
        errors = self._errors(scale, zero_point, wanted)  # (n, O), inf where not wanted
        if first_errors is not None:
            errors[0] = first_errors
        best_error = errors.min(0).values
        near = errors <= best_error + _TIE_RTOL * best_error.abs()
        choice = errors.argmin(0)  # first occurrence of the minimum
        close_calls = near.sum(0) > 1
        if bool(close_calls.any()):
            exact = torch.full(errors.shape, math.inf, dtype=torch.float64)
            candidate, channel = (near & close_calls).nonzero(as_tuple=True)
            exact[candidate, channel] = self._exact_errors(
                scale[candidate, channel], zero_point[candidate, channel], channel
            )
            choice = torch.where(close_calls, exact.argmin(0), choice)
        choice = choice.unsqueeze(0)
        return ratios.gather(0, choice).squeeze(0), errors.gather(0, choice).squeeze(0)

    def _errors(self, scale: torch.Tensor, zero_point: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
        """float32 output errors at the qparams ``(n, O)`` where ``wanted`` (inf elsewhere), a
        bounded number of candidate weights at a time. One group: only the wanted (candidate,
        channel) pairs are evaluated; several: whole candidates (each group has its own H)."""
        errors = torch.full(wanted.shape, math.inf)
        k = self.weight.shape[1]
        if self.groups == 1:
            candidate, channel = wanted.nonzero(as_tuple=True)
            step = max(1, _MAX_BATCH_ELEMENTS // k)
            for i in range(0, candidate.numel(), step):
                c, ch = candidate[i:i + step], channel[i:i + step]
                w = self.weight[ch]
                q = self.observer
                w_q = _fake_quantize_per_row(w, scale[c, ch].unsqueeze(0), zero_point[c, ch].unsqueeze(0),
                                             q.quant_min, q.quant_max)
                errors[c, ch] = _group_errors(w_q.sub_(w), self.form).squeeze(0)
            return errors
        step = max(1, _MAX_BATCH_ELEMENTS // self.weight.numel())
        for i in range(0, wanted.shape[0], step):
            errors[i:i + step] = _output_error(self._deltas(scale[i:i + step], zero_point[i:i + step]), self.form)
        return errors.masked_fill_(~wanted, math.inf)

    def _qparams(self, ratios: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale (float32) and zero point of every channel at every candidate ratio."""
        clip = (self.amax * ratios).reshape(-1)
        scale, zero_point = self.observer._calculate_qparams(-clip, clip)
        return scale.float().reshape(ratios.shape), zero_point.reshape(ratios.shape)

    def _deltas(self, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
        """``ŵ - w`` with each of ``n`` sets of per-channel qparams: ``(n, O, K)``."""
        q = self.observer
        return _fake_quantize_per_row(self.weight, scale, zero_point, q.quant_min, q.quant_max).sub_(self.weight)

    def _exact_errors(self, scale: torch.Tensor, zero_point: torch.Tensor, channel: torch.Tensor) -> torch.Tensor:
        """float64 ``δᵀ H δ`` of single (channel, qparams) pairs, on ``H`` itself."""
        w = self.weight[channel]  # (P, K)
        q = self.observer
        w_q = _fake_quantize_per_row(w, scale.unsqueeze(0), zero_point.unsqueeze(0), q.quant_min, q.quant_max)
        delta = (w_q.squeeze(0) - w).double()
        group = channel * self.groups // self.weight.shape[0]
        if self.groups == 1:
            return ((delta @ self.hessian[0]) * delta).sum(-1)
        k = delta.shape[1]
        step = max(1, _MAX_BATCH_ELEMENTS // (k * k))  # bounds the gathered H copies
        return torch.cat([
            torch.einsum("pk,pkl,pl->p", delta[i:i + step], self.hessian[group[i:i + step]], delta[i:i + step])
            for i in range(0, delta.shape[0], step)
        ])


def _fake_quantize_per_row(
    w: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int
) -> torch.Tensor:
    """``w`` ``(O, K)`` fake-quantized with each of ``n`` sets of per-row qparams
    ``(n, O)``: ``(n, O, K)``, bit for bit ``torch.fake_quantize_per_channel_affine`` (which
    multiplies by the float32 reciprocal of the scale and rounds half to even), without
    materialising ``n`` copies of ``w`` first."""
    inv_scale = (1.0 / scale).unsqueeze(-1)
    q = torch.round(w * inv_scale)
    if bool((zero_point == 0).all()):  # symmetric int8: no shift
        q.clamp_(qmin, qmax)
    else:
        zp = zero_point.to(torch.float32).unsqueeze(-1)
        q.add_(zp).clamp_(qmin, qmax).sub_(zp)
    return q.mul_(scale.unsqueeze(-1))


@dataclass(frozen=True, kw_only=True)
class _QuadraticForm:
    """How a layer's search evaluates ``δᵀ H δ`` (``H``: ``(g, K, K)``, one per group).

    ``kind`` is ``"low_rank"`` (``matrix`` is ``F`` ``(g, r, K)`` with ``H = Fᵀ F``: ``‖F δ‖²``),
    ``"cholesky"`` (``matrix`` is the lower-triangular ``L`` with ``H = L Lᵀ``: ``‖Lᵀ δ‖²``, in
    column blocks so the zeros above the diagonal cost nothing) or ``"dense"`` (``H``).
    """

    kind: str
    matrix: torch.Tensor  # float32


def _quadratic_form(hessian: torch.Tensor, rows: int) -> _QuadraticForm:
    """The cheapest exact form of ``H`` (float64 ``(g, K, K)``) for the search.

    ``H`` has rank at most the number of input vectors seen; when that is well below ``K``
    (a classifier's pooled input: one vector per calibration image), the search runs on a
    ``rank × K`` pivoted Cholesky factor (``rank`` steps of ``O(rank · K)``; an
    eigendecomposition would cost ``O(K³)``). Otherwise a Cholesky factor halves the work of
    each evaluation; a singular ``H`` is used as it is.
    """
    k = hessian.shape[-1]
    if rows < k // 2 and rows <= _MAX_LOW_RANK:
        return _QuadraticForm(kind="low_rank", matrix=_pivoted_cholesky(hessian, rows).float())
    # A feature that is always zero (a dead input channel) has a zero row and column in H:
    # factor H + 1 on its diagonal instead, then zero that 1 in the factor (the feature is
    # decoupled from the others, so L Lᵀ is exactly H again).
    dead = hessian.diagonal(dim1=1, dim2=2) == 0  # (g, K)
    lower, info = torch.linalg.cholesky_ex(hessian + torch.diag_embed(dead.to(hessian.dtype)))
    if bool((info == 0).all()):
        lower = lower * ~torch.diag_embed(dead)
        return _QuadraticForm(kind="cholesky", matrix=lower.float())
    return _QuadraticForm(kind="dense", matrix=hessian.float())


def _pivoted_cholesky(hessian: torch.Tensor, rank: int) -> torch.Tensor:
    """``F`` ``(g, rank, K)`` with ``Fᵀ F = H`` for positive semi-definite ``H`` ``(g, K, K)``
    of rank at most ``rank``: each step takes the column of the largest remaining diagonal
    (steps whose remaining diagonal is round-off add a zero row)."""
    g, k, _ = hessian.shape
    factor = hessian.new_zeros(g, rank, k)
    residual = hessian.diagonal(dim1=1, dim2=2).clone()  # (g, K): diag(H - Fᵀ F)
    floor = residual.amax(-1, keepdim=True) * (k * torch.finfo(hessian.dtype).eps)
    group = torch.arange(g)
    for step in range(rank):
        pivot = residual.argmax(-1)  # (g,)
        pivot_value = residual[group, pivot].unsqueeze(-1)  # (g, 1)
        done = factor[:, :step]  # (g, step, K)
        column = hessian[group, :, pivot] - (done * done[group, :, pivot].unsqueeze(-1)).sum(1)
        row = torch.where(pivot_value > floor, column / pivot_value.clamp(min=floor).sqrt(), 0.0)
        factor[:, step] = row
        residual -= row.square()
    return factor


def _output_error(delta: torch.Tensor, form: _QuadraticForm) -> torch.Tensor:
    """``δ_cᵀ H_g(c) δ_c`` for every candidate and output channel ``c`` of ``delta``
    ``(n, O, K)`` (``O/g`` consecutive channels per group): ``(n, O)``."""
    n, channels, k = delta.shape
    groups = form.matrix.shape[0]
    per_group = delta.reshape(n, groups, channels // groups, k).transpose(0, 1).reshape(groups, -1, k)
    error = _group_errors(per_group, form)  # (g, n * O/g)
    return error.reshape(groups, n, -1).transpose(0, 1).reshape(n, channels)


def _group_errors(delta: torch.Tensor, form: _QuadraticForm) -> torch.Tensor:
    """``δᵀ H δ`` for the rows of ``delta`` ``(g, N, K)``: ``(g, N)``."""
    matrix = form.matrix
    if form.kind == "low_rank":
        return (delta @ matrix.transpose(1, 2)).square().sum(-1)
    if form.kind == "dense":
        return ((delta @ matrix) * delta).sum(-1)
    # ‖Lᵀ δ‖², block column by block column: column block J of δᵀ L only involves rows ≥ J.
    k = matrix.shape[-1]
    width = -(-k // min(_CHOLESKY_BLOCKS, max(1, k // 128)))
    error = delta.new_zeros(delta.shape[:2])
    for start in range(0, k, width):
        error += (delta[..., start:] @ matrix[:, start:, start:start + width]).square().sum(-1)
    return error


def link_layer_input(observer: PerChannelOutputMSEObserver, input_observer: nn.Module, geometry: LayerGeometry) -> bool:
    """Let ``observer`` (a layer's weight observer) collect the layer's input statistics
    from ``input_observer`` (the observer on the layer's input): a :class:`LayerInputMoments`
    registered as its forward pre-hook. False (nothing linked) for input vectors longer than
    ``_MAX_FEATURES``."""
    if geometry.features > _MAX_FEATURES:
        return False
    moments = LayerInputMoments(geometry)
    observer.link(moments)
    input_observer.register_forward_pre_hook(moments.hook)
    return True


def link_output_aware_weight_observers(edge_or_node_to_obs_or_fq: dict[Any, Any]) -> int:
    """For each conv/linear whose weight edge has a :class:`PerChannelOutputMSEObserver`,
    collect its input statistics from the observer on its input edge. Returns how many
    layers were linked. Meant for a quantizer's ``prepare_obs_or_fq_callback``."""
    linked = 0
    for site, observer in edge_or_node_to_obs_or_fq.items():
        if not isinstance(observer, PerChannelOutputMSEObserver) or not isinstance(site, tuple):
            continue
        weight, op = site
        if len(op.args) < 2 or op.args[1] is not weight or not isinstance(op.args[0], Node):
            continue
        input_observer = edge_or_node_to_obs_or_fq.get((op.args[0], op))
        geometry = layer_geometry(op)
        if isinstance(input_observer, nn.Module) and geometry is not None:
            linked += link_layer_input(observer, input_observer, geometry)
    return linked
