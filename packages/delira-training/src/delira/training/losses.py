"""Segmentation and classification losses with one definition for PyTorch and Keras: cross-entropy
with class weights, soft Dice, focal and Tversky, and nnU-Net's deep-supervision weighting.

Every loss takes logits ``(N, K, *spatial)`` (``(N, K)`` for classification) and integer labels
``(N, *spatial)`` (a channel axis of size 1, ``(N, 1, *spatial)``, is dropped). The torch losses are
called ``loss(logits, labels)``, the Keras ones ``loss(labels, logits)`` (each framework's argument
order); both compute in float32 and return a scalar. With ``p = softmax(logits)`` over the class
axis, ``t`` the one-hot labels and sums over the batch and all voxels (batch statistics, as
nnU-Net's Dice):

- ``ce``: ``sum_i w[y_i] * -log p_i[y_i] / sum_i w[y_i]`` over all voxels ``i`` (``w``:
  ``class_weights``, default all 1; the weighted mean of ``torch.nn.functional.cross_entropy``).
- ``dice``: ``1 - mean_k (2 sum p_k t_k + s) / (sum p_k + sum t_k + s)`` over the foreground
  classes ``k >= 1`` (``smooth`` ``s``, default 1).
- ``focal``: ``mean_i -a[y_i] * (1 - p_i[y_i]) ** gamma * log p_i[y_i]`` (Lin et al. 2017 on the
  softmax; ``gamma`` default 2; ``alpha`` None: ``a = 1``; a number ``a``: ``1 - a`` for the
  background class 0 and ``a`` for every other class; a list: one weight per class). ``gamma=0``
  without ``alpha`` is the cross-entropy.
- ``tversky``: ``1 - mean_k (TP_k + s) / (TP_k + alpha FP_k + beta FN_k + s)`` over the foreground
  classes with ``TP = sum p t``, ``FP = sum p (1 - t)``, ``FN = sum (1 - p) t`` (Salehi et al. 2017;
  ``alpha`` 0.3, ``beta`` 0.7, ``smooth`` 1 by default; ``alpha = beta = 0.5`` with ``smooth`` s is the
  soft Dice with ``smooth`` 2s).

Sparse annotations: every loss takes ``ignore_label`` (``data.ignore_label``); the voxels with that
label are left out (``ce``/``focal``: the mean over the other voxels; ``dice``/``tversky``: left out
of every sum), so the predictions there change neither the loss nor its gradient.

Region training (``data.regions``, nnU-Net's regions; :data:`REGION_LOSSES`): the logits ``(N, R,
*spatial)`` have one channel per region, the targets are the region masks ``t_r = isin(labels,
regions[r])`` made inside the loss from the integer labels, ``s = sigmoid(logits)``:

- ``ce`` (:class:`TorchRegionBCE`): ``mean_{r, i} max(z, 0) - z t + log(1 + exp(-|z|))``, the
  binary cross-entropy with logits over regions and voxels (with an ignore label the mean over the
  annotated voxels: ``sum m bce / (R sum m)``; nnU-Net's divides by ``sum m`` only).
- ``dice`` (:class:`TorchRegionDice`): ``1 - mean_r (2 sum s_r t_r + s) / (sum s_r + sum t_r + s)``
  over every region (no background channel); ``tversky`` likewise on ``s``.
  ``"ce+dice"`` is nnU-Net's ``DC_and_BCE_loss`` up to the constant 1.

Deep supervision (:class:`DeepSupervisionLoss`): a network that returns several outputs, full
resolution first, is trained on ``sum_k w_k * loss(output_k, labels subsampled to output k)`` with
nnU-Net's weights (:func:`deep_supervision_weights`: ``1 / 2**k`` normalised to sum 1, the lowest
resolution's set to 0). The labels are subsampled by picking voxels, so ignored voxels stay ignored.

Example::

    losses = segmentation_losses("ce+tversky", "torch", num_classes=3,
                                 loss_args={"tversky": {"alpha": 0.3, "beta": 0.7}})
    total = sum(fn(logits, labels) for fn in losses.values())
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from delira.models import deep_supervision_weights
from delira.models._steps import compute_zero_weight_outputs

__all__ = [
    "BACKENDS",
    "LOSSES",
    "LOSS_ARGUMENTS",
    "REGION_LOSSES",
    "DeepSupervisionLoss",
    "KerasCrossEntropy",
    "KerasFocal",
    "KerasRegionBCE",
    "KerasRegionDice",
    "KerasRegionTversky",
    "KerasSoftDice",
    "KerasTversky",
    "TorchCrossEntropy",
    "TorchFocal",
    "TorchRegionBCE",
    "TorchRegionDice",
    "TorchRegionTversky",
    "TorchSoftDice",
    "TorchTversky",
    "check_loss_args",
    "deep_supervision_weights",
    "make_loss",
    "segmentation_losses",
]

#: the loss names (``training.loss`` joins them with ``+``)
LOSSES = ("ce", "dice", "focal", "tversky")
#: the arguments each loss takes (``training.loss_args.<name>``)
LOSS_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "ce": ("class_weights",),
    "dice": ("smooth",),
    "focal": ("gamma", "alpha"),
    "tversky": ("alpha", "beta", "smooth"),
}
#: the smallest ``1 - p`` of the focal factor (keeps its gradient finite for ``gamma < 1``)
_TINY = 1e-12
#: the frameworks: ``torch`` (``loss(logits, labels)``) and ``tf`` / ``keras`` (``loss(labels, logits)``)
BACKENDS = ("torch", "tf", "keras")


# --- argument checks (framework-free) ------------------------------------------------------------
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _class_list(value: Any, what: str, num_classes: int | None) -> list[str]:
    if not isinstance(value, (list, tuple)) or not value or not all(_is_number(v) and v >= 0 for v in value):
        return [f"{what}: expected a list of non-negative numbers, one per class, got {value!r}"]
    if num_classes is not None and len(value) != num_classes:
        return [
            f"{what}: {len(value)} weights for {num_classes} classes (model.args.num_classes); give one "
            f"per class, background first"
        ]
    if not any(v > 0 for v in value):
        return [f"{what}: all weights are 0; give at least one positive weight"]
    return []


def check_loss_args(
    name: str, args: Mapping[str, Any], num_classes: int | None = None, where: str | None = None
) -> list[str]:
    """The problems of the arguments ``args`` of loss ``name`` (empty when they are valid).

    Args:
        name: one of :data:`LOSSES`.
        args: ``{argument: value}`` (see the module docstring for each loss's arguments).
        num_classes: the number of classes (checks the length of per-class lists), or None.
        where: the prefix of each message (default ``loss_args.<name>``).

    Returns:
        One line per problem, naming the argument, what was expected and the fix.
    """
    where = where or f"loss_args.{name}"
    if name not in LOSS_ARGUMENTS:
        return [f"{where}: unknown loss {name!r}; use one of {list(LOSSES)}"]
    if not isinstance(args, Mapping):
        return [f"{where}: expected a mapping of arguments ({', '.join(LOSS_ARGUMENTS[name])}), got {args!r}"]
    problems = []
    for key, value in args.items():
        what = f"{where}.{key}"
        if key not in LOSS_ARGUMENTS[name]:
            problems.append(
                f"{what}: unknown argument; loss {name!r} takes {', '.join(LOSS_ARGUMENTS[name])}"
            )
        elif key == "class_weights":
            problems += _class_list(value, what, num_classes)
        elif key == "alpha" and name == "focal":
            if value is None:
                continue
            if isinstance(value, (list, tuple)):
                problems += _class_list(value, what, num_classes)
            elif not (_is_number(value) and 0 <= value <= 1):
                problems.append(
                    f"{what}: expected null, a number in [0, 1] (the foreground weight) or one weight per "
                    f"class, got {value!r}"
                )
        elif key == "gamma":
            if not (_is_number(value) and value >= 0):
                problems.append(f"{what}: expected a number >= 0 (0: no focusing), got {value!r}")
        elif key in ("alpha", "beta"):  # tversky
            if not (_is_number(value) and value >= 0):
                problems.append(
                    f"{what}: expected a number >= 0 (the weight of the false {key}), got {value!r}"
                )
        elif key == "smooth" and not (_is_number(value) and value >= 0):
            problems.append(
                f"{what}: expected a number >= 0 (added to numerator and denominator), got {value!r}"
            )
    if name == "tversky" and not problems:
        alpha, beta = args.get("alpha", 0.3), args.get("beta", 0.7)
        if alpha + beta == 0 and args.get("smooth", 1.0) == 0:
            problems.append(f"{where}: alpha + beta and smooth are all 0; the index is undefined")
    return problems


def _checked(name: str, args: Mapping[str, Any], num_classes: int | None = None) -> None:
    problems = check_loss_args(name, args, num_classes, where=f"{name} loss")
    if problems:
        raise ValueError("; ".join(problems))


def _checked_ignore(ignore_label: Any) -> int | None:
    """``ignore_label`` as an int (or None); a ValueError unless it is None or an int > 0."""
    if ignore_label is None:
        return None
    if isinstance(ignore_label, bool) or not isinstance(ignore_label, int) or ignore_label <= 0:
        raise ValueError(
            f"ignore_label must be None or a label value > 0 that marks unannotated voxels, got {ignore_label!r}"
        )
    return int(ignore_label)


def _checked_regions(regions: Any) -> list[tuple[int, ...]]:
    """``regions`` as tuples of ints; a ValueError naming the fix unless it is a non-empty list of
    non-empty lists of labels > 0 (:func:`delira.training.regions.check_regions`)."""
    from delira.training.regions import check_regions

    problems = check_regions(regions, where="regions", check_order=False)
    if problems:
        raise ValueError("; ".join(problems))
    return [tuple(int(v) for v in r) for r in regions]


def _focal_alpha(alpha: Any, num_classes: int) -> list[float] | None:
    """The per-class focal weights: None, ``[1 - a, a, a, ...]`` for a number ``a``, or the list."""
    if alpha is None:
        return None
    if isinstance(alpha, (list, tuple)):
        if len(alpha) != num_classes:
            raise ValueError(
                f"focal loss: alpha has {len(alpha)} weights but the logits have {num_classes} classes; "
                "give one weight per class, background first"
            )
        return [float(a) for a in alpha]
    return [1.0 - float(alpha)] + [float(alpha)] * (num_classes - 1)


def _class_weights(weights: Sequence[float] | None, num_classes: int, what: str) -> list[float] | None:
    if weights is None:
        return None
    if len(weights) != num_classes:
        raise ValueError(
            f"{what}: {len(weights)} class weights but the logits have {num_classes} classes; give one "
            "weight per class, background first"
        )
    return [float(w) for w in weights]


# --- PyTorch --------------------------------------------------------------------------------------
def _torch_labels(logits: Any, labels: Any) -> Any:
    if labels.dim() == logits.dim():  # (N, 1, *spatial)
        labels = labels[:, 0]
    return labels.long()


def _torch_onehot(labels: Any, k: int, dtype: Any) -> Any:
    import torch

    return torch.nn.functional.one_hot(labels, k).movedim(-1, 1).to(dtype)


def _torch_valid(labels: Any, ignore_label: int | None) -> tuple[Any, Any]:
    """``(labels with the ignored voxels set to 0, valid mask (N, *spatial) float32)``; the mask is
    None without an ignore label."""
    import torch

    if ignore_label is None:
        return labels, None
    valid = labels != int(ignore_label)
    return torch.where(valid, labels, torch.zeros_like(labels)), valid.float()


def _torch_masked_probs(probs: Any, onehot: Any, valid: Any) -> tuple[Any, Any]:
    """``probs`` and ``onehot`` ``(N, K, *spatial)`` zeroed where ``valid`` ``(N, *spatial)`` is 0."""
    if valid is None:
        return probs, onehot
    m = valid.unsqueeze(1)
    return probs * m, onehot * m


class TorchCrossEntropy:
    """Cross-entropy with optional class weights: ``loss(logits (N, K, *spatial) float, labels
    (N, *spatial) int) -> scalar``; the weighted mean ``sum w[y] * nll / sum w[y]`` (over the voxels
    whose label is not ``ignore_label``; 0 when every voxel is ignored)."""

    def __init__(self, class_weights: Sequence[float] | None = None, ignore_label: int | None = None) -> None:
        if class_weights is not None:
            _checked("ce", {"class_weights": list(class_weights)})
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.ignore_label = _checked_ignore(ignore_label)

    def __call__(self, logits: Any, labels: Any) -> Any:
        import torch

        logits = logits.float()
        labels = _torch_labels(logits, labels)
        weight = _class_weights(self.class_weights, logits.shape[1], "ce loss")
        w = None if weight is None else torch.tensor(weight, dtype=logits.dtype, device=logits.device)
        if self.ignore_label is None:
            return torch.nn.functional.cross_entropy(logits, labels, weight=w)
        labels, valid = _torch_valid(labels, self.ignore_label)
        nll = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
        per_voxel = valid if w is None else valid * w[labels]
        return (per_voxel * nll).sum() / per_voxel.sum().clamp_min(_TINY)


class TorchSoftDice:
    """Soft Dice loss of the foreground classes (batch Dice, as nnU-Net): ``1 - mean_k D_k`` with
    ``D_k = (2 sum p_k t_k + smooth) / (sum p_k + sum t_k + smooth)`` over the batch and all voxels.

    Called as ``loss(logits (N, K, *spatial) float, labels (N, *spatial) int64)`` -> scalar tensor.
    Voxels labelled ``ignore_label`` are left out of every sum.
    """

    def __init__(self, smooth: float = 1.0, ignore_label: int | None = None) -> None:
        _checked("dice", {"smooth": smooth})
        self.smooth = float(smooth)
        self.ignore_label = _checked_ignore(ignore_label)

    def __call__(self, logits: Any, labels: Any) -> Any:
        import torch

        labels, valid = _torch_valid(_torch_labels(logits, labels), self.ignore_label)
        probs = torch.softmax(logits.float(), dim=1)[:, 1:]
        onehot = _torch_onehot(labels, logits.shape[1], probs.dtype)[:, 1:]
        probs, onehot = _torch_masked_probs(probs, onehot, valid)
        axes = [0, *range(2, probs.dim())]
        intersection = (probs * onehot).sum(axes)
        total = probs.sum(axes) + onehot.sum(axes)
        return 1.0 - ((2.0 * intersection + self.smooth) / (total + self.smooth)).mean()


class TorchFocal:
    """Focal loss on the softmax: ``mean -a[y] (1 - p_y) ** gamma log p_y``; arguments as in the
    module docstring (the mean over the voxels not labelled ``ignore_label``).
    ``loss(logits (N, K, *spatial), labels (N, *spatial) int) -> scalar``."""

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | None = None,
        ignore_label: int | None = None,
    ) -> None:
        _checked("focal", {"gamma": gamma, "alpha": alpha})
        self.gamma = float(gamma)
        self.alpha = list(alpha) if isinstance(alpha, (list, tuple)) else alpha
        self.ignore_label = _checked_ignore(ignore_label)

    def __call__(self, logits: Any, labels: Any) -> Any:
        import torch

        logits = logits.float()
        labels, valid = _torch_valid(_torch_labels(logits, labels), self.ignore_label)
        k = logits.shape[1]
        onehot = _torch_onehot(labels, k, logits.dtype)
        log_p = (torch.log_softmax(logits, dim=1) * onehot).sum(1)
        # 1 - p from expm1 (exact near p = 1); clamped so that gamma < 1 has a finite gradient at p = 1
        factor = (-torch.expm1(log_p)).clamp_min(_TINY) ** self.gamma
        alpha = _focal_alpha(self.alpha, k)
        if alpha is not None:
            shape = (1, k) + (1,) * (logits.dim() - 2)
            a = torch.tensor(alpha, dtype=logits.dtype, device=logits.device).view(shape)
            factor = factor * (onehot * a).sum(1)
        if valid is not None:
            return -(factor * log_p * valid).sum() / valid.sum().clamp_min(1.0)
        return -(factor * log_p).mean()


class TorchTversky:
    """Tversky loss of the foreground classes (batch statistics): ``1 - mean_k (TP + s) / (TP +
    alpha FP + beta FN + s)`` (voxels labelled ``ignore_label`` left out).
    ``loss(logits (N, K, *spatial), labels (N, *spatial) int) -> scalar``."""

    def __init__(
        self, alpha: float = 0.3, beta: float = 0.7, smooth: float = 1.0, ignore_label: int | None = None
    ) -> None:
        _checked("tversky", {"alpha": alpha, "beta": beta, "smooth": smooth})
        self.alpha, self.beta, self.smooth = float(alpha), float(beta), float(smooth)
        self.ignore_label = _checked_ignore(ignore_label)

    def __call__(self, logits: Any, labels: Any) -> Any:
        import torch

        labels, valid = _torch_valid(_torch_labels(logits, labels), self.ignore_label)
        probs = torch.softmax(logits.float(), dim=1)[:, 1:]
        onehot = _torch_onehot(labels, logits.shape[1], probs.dtype)[:, 1:]
        probs, onehot = _torch_masked_probs(probs, onehot, valid)
        axes = [0, *range(2, probs.dim())]
        tp = (probs * onehot).sum(axes)
        fp = probs.sum(axes) - tp
        fn = onehot.sum(axes) - tp
        index = (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth)
        return 1.0 - index.mean()


def _torch_regions(
    logits: Any, labels: Any, regions: Sequence[tuple[int, ...]], ignore_label: int | None
) -> Any:
    """``(float32 logits (N, R, *spatial), region targets (N, R, *spatial) float32, valid mask
    (N, 1, *spatial) float32 or None)``."""
    import torch

    logits = logits.float()
    if logits.shape[1] != len(regions):
        raise ValueError(
            f"the network has {logits.shape[1]} output channels but there are {len(regions)} regions; a "
            f"region model has one output per region: set model.args.num_classes to {len(regions)}"
        )
    labels = _torch_labels(logits, labels)
    targets = torch.stack(
        [torch.isin(labels, torch.tensor(r, dtype=labels.dtype, device=labels.device)) for r in regions], 1
    ).to(logits.dtype)
    valid = None if ignore_label is None else (labels != ignore_label).unsqueeze(1).to(logits.dtype)
    return logits, targets, valid


class TorchRegionBCE:
    """Binary cross-entropy with logits of each region (nnU-Net's region training):
    ``loss(logits (N, R, *spatial) float, labels (N, *spatial) int) -> scalar``, the targets the masks
    ``isin(labels, regions[r])``; the mean over regions and voxels (those labelled ``ignore_label``
    left out: ``sum m * bce / (R * sum m)``)."""

    def __init__(self, regions: Sequence[Sequence[int]], ignore_label: int | None = None) -> None:
        self.regions = _checked_regions(regions)
        self.ignore_label = _checked_ignore(ignore_label)

    def __call__(self, logits: Any, labels: Any) -> Any:
        import torch

        logits, targets, valid = _torch_regions(logits, labels, self.regions, self.ignore_label)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        if valid is None:
            return bce.mean()
        return (bce * valid).sum() / (valid.sum() * len(self.regions)).clamp_min(_TINY)


class TorchRegionDice:
    """Soft Dice of every region on the sigmoid of its logit (batch Dice, no background channel):
    ``1 - mean_r (2 sum s_r t_r + smooth) / (sum s_r + sum t_r + smooth)``, ``s = sigmoid(logits)``,
    ``t`` the region masks; voxels labelled ``ignore_label`` left out.
    ``loss(logits (N, R, *spatial), labels (N, *spatial) int) -> scalar``."""

    def __init__(
        self, regions: Sequence[Sequence[int]], smooth: float = 1.0, ignore_label: int | None = None
    ) -> None:
        _checked("dice", {"smooth": smooth})
        self.regions = _checked_regions(regions)
        self.smooth = float(smooth)
        self.ignore_label = _checked_ignore(ignore_label)

    def __call__(self, logits: Any, labels: Any) -> Any:
        import torch

        logits, targets, valid = _torch_regions(logits, labels, self.regions, self.ignore_label)
        probs = torch.sigmoid(logits)
        if valid is not None:
            probs, targets = probs * valid, targets * valid
        axes = [0, *range(2, probs.dim())]
        intersection = (probs * targets).sum(axes)
        total = probs.sum(axes) + targets.sum(axes)
        return 1.0 - ((2.0 * intersection + self.smooth) / (total + self.smooth)).mean()


class TorchRegionTversky:
    """The Tversky loss of :class:`TorchTversky` on the regions' sigmoids (as :class:`TorchRegionDice`)."""

    def __init__(
        self,
        regions: Sequence[Sequence[int]],
        alpha: float = 0.3,
        beta: float = 0.7,
        smooth: float = 1.0,
        ignore_label: int | None = None,
    ) -> None:
        _checked("tversky", {"alpha": alpha, "beta": beta, "smooth": smooth})
        self.regions = _checked_regions(regions)
        self.alpha, self.beta, self.smooth = float(alpha), float(beta), float(smooth)
        self.ignore_label = _checked_ignore(ignore_label)

    def __call__(self, logits: Any, labels: Any) -> Any:
        import torch

        logits, targets, valid = _torch_regions(logits, labels, self.regions, self.ignore_label)
        probs = torch.sigmoid(logits)
        if valid is not None:
            probs, targets = probs * valid, targets * valid
        axes = [0, *range(2, probs.dim())]
        tp = (probs * targets).sum(axes)
        fp = probs.sum(axes) - tp
        fn = targets.sum(axes) - tp
        index = (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth)
        return 1.0 - index.mean()


# --- Keras ----------------------------------------------------------------------------------------
def _keras_labels(labels: Any, logits: Any) -> Any:
    from keras import ops

    if len(labels.shape) == len(logits.shape):  # (N, 1, *spatial)
        labels = labels[:, 0]
    return ops.cast(labels, "int32")


def _keras_inputs(labels: Any, logits: Any, ignore_label: int | None = None) -> tuple[Any, Any, int, Any]:
    """``(float32 logits, one-hot labels (N, K, *spatial) float32, K, valid (N, *spatial) float32 or
    None)``; ignored voxels have the one-hot of class 0 (and valid 0)."""
    from keras import ops

    logits = ops.cast(logits, "float32")
    labels = _keras_labels(labels, logits)
    valid = None
    if ignore_label is not None:
        keep = ops.not_equal(labels, int(ignore_label))
        labels = ops.where(keep, labels, ops.zeros_like(labels))
        valid = ops.cast(keep, "float32")
    k = int(logits.shape[1])
    onehot = ops.moveaxis(ops.one_hot(labels, k), -1, 1)
    return logits, ops.cast(onehot, "float32"), k, valid


def _keras_masked(probs: Any, onehot: Any, valid: Any) -> tuple[Any, Any]:
    from keras import ops

    if valid is None:
        return probs, onehot
    m = ops.expand_dims(valid, 1)
    return probs * m, onehot * m


def _keras_class_vector(values: Sequence[float], ndim: int) -> Any:
    from keras import ops

    return ops.reshape(ops.convert_to_tensor(values, dtype="float32"), (1, len(values)) + (1,) * (ndim - 2))


class KerasCrossEntropy:
    """:class:`TorchCrossEntropy` in Keras' argument order: ``loss(labels (N, *spatial) int, logits
    (N, K, *spatial) float) -> scalar``."""

    def __init__(self, class_weights: Sequence[float] | None = None, ignore_label: int | None = None) -> None:
        if class_weights is not None:
            _checked("ce", {"class_weights": list(class_weights)})
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.ignore_label = _checked_ignore(ignore_label)

    def __call__(self, labels: Any, logits: Any) -> Any:
        from keras import ops

        logits, onehot, k, valid = _keras_inputs(labels, logits, self.ignore_label)
        nll = -ops.sum(ops.log_softmax(logits, axis=1) * onehot, axis=1)
        weight = _class_weights(self.class_weights, k, "ce loss")
        if weight is None and valid is None:
            return ops.mean(nll)
        w = (
            ops.ones_like(nll)
            if weight is None
            else ops.sum(onehot * _keras_class_vector(weight, len(logits.shape)), axis=1)
        )
        if valid is not None:
            w = w * valid
            return ops.sum(w * nll) / ops.maximum(ops.sum(w), _TINY)
        return ops.sum(w * nll) / ops.sum(w)


class KerasSoftDice:
    """The soft Dice loss of :class:`TorchSoftDice` in Keras' argument order:
    ``loss(labels (N, *spatial) int, logits (N, K, *spatial) float)`` -> scalar."""

    def __init__(self, smooth: float = 1.0, ignore_label: int | None = None) -> None:
        _checked("dice", {"smooth": smooth})
        self.smooth = float(smooth)
        self.ignore_label = _checked_ignore(ignore_label)

    def __call__(self, labels: Any, logits: Any) -> Any:
        from keras import ops

        logits, onehot, _, valid = _keras_inputs(labels, logits, self.ignore_label)
        probs, onehot = _keras_masked(ops.softmax(logits, axis=1)[:, 1:], onehot[:, 1:], valid)
        axes = [0, *range(2, len(probs.shape))]
        intersection = ops.sum(probs * onehot, axis=axes)
        total = ops.sum(probs, axis=axes) + ops.sum(onehot, axis=axes)
        return 1.0 - ops.mean((2.0 * intersection + self.smooth) / (total + self.smooth))


class KerasFocal:
    """:class:`TorchFocal` in Keras' argument order: ``loss(labels, logits) -> scalar``."""

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | None = None,
        ignore_label: int | None = None,
    ) -> None:
        _checked("focal", {"gamma": gamma, "alpha": alpha})
        self.gamma = float(gamma)
        self.alpha = list(alpha) if isinstance(alpha, (list, tuple)) else alpha
        self.ignore_label = _checked_ignore(ignore_label)

    def __call__(self, labels: Any, logits: Any) -> Any:
        from keras import ops

        logits, onehot, k, valid = _keras_inputs(labels, logits, self.ignore_label)
        log_p = ops.sum(ops.log_softmax(logits, axis=1) * onehot, axis=1)
        factor = ops.power(ops.maximum(-ops.expm1(log_p), _TINY), self.gamma)
        alpha = _focal_alpha(self.alpha, k)
        if alpha is not None:
            factor = factor * ops.sum(onehot * _keras_class_vector(alpha, len(logits.shape)), axis=1)
        if valid is not None:
            return -ops.sum(factor * log_p * valid) / ops.maximum(ops.sum(valid), 1.0)
        return -ops.mean(factor * log_p)


class KerasTversky:
    """:class:`TorchTversky` in Keras' argument order: ``loss(labels, logits) -> scalar``."""

    def __init__(
        self, alpha: float = 0.3, beta: float = 0.7, smooth: float = 1.0, ignore_label: int | None = None
    ) -> None:
        _checked("tversky", {"alpha": alpha, "beta": beta, "smooth": smooth})
        self.alpha, self.beta, self.smooth = float(alpha), float(beta), float(smooth)
        self.ignore_label = _checked_ignore(ignore_label)

    def __call__(self, labels: Any, logits: Any) -> Any:
        from keras import ops

        logits, onehot, _, valid = _keras_inputs(labels, logits, self.ignore_label)
        probs, onehot = _keras_masked(ops.softmax(logits, axis=1)[:, 1:], onehot[:, 1:], valid)
        axes = [0, *range(2, len(probs.shape))]
        tp = ops.sum(probs * onehot, axis=axes)
        fp = ops.sum(probs, axis=axes) - tp
        fn = ops.sum(onehot, axis=axes) - tp
        index = (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth)
        return 1.0 - ops.mean(index)


def _keras_regions(
    labels: Any, logits: Any, regions: Sequence[tuple[int, ...]], ignore_label: int | None
) -> Any:
    """As :func:`_torch_regions`, in Keras ops: ``(logits, targets, valid)``."""
    from keras import ops

    logits = ops.cast(logits, "float32")
    if int(logits.shape[1]) != len(regions):
        raise ValueError(
            f"the network has {int(logits.shape[1])} output channels but there are {len(regions)} regions; "
            f"a region model has one output per region: set model.args.num_classes to {len(regions)}"
        )
    labels = _keras_labels(labels, logits)
    masks = []
    for region in regions:
        mask = ops.cast(ops.equal(labels, region[0]), "float32")
        for value in region[1:]:  # a voxel has one label: the indicators of a region's labels add up
            mask = mask + ops.cast(ops.equal(labels, value), "float32")
        masks.append(mask)
    targets = ops.stack(masks, axis=1)
    valid = None
    if ignore_label is not None:
        valid = ops.expand_dims(ops.cast(ops.not_equal(labels, int(ignore_label)), "float32"), 1)
    return logits, targets, valid


class KerasRegionBCE:
    """:class:`TorchRegionBCE` in Keras' argument order: ``loss(labels, logits) -> scalar``."""

    def __init__(self, regions: Sequence[Sequence[int]], ignore_label: int | None = None) -> None:
        self.regions = _checked_regions(regions)
        self.ignore_label = _checked_ignore(ignore_label)

    def __call__(self, labels: Any, logits: Any) -> Any:
        from keras import ops

        logits, targets, valid = _keras_regions(labels, logits, self.regions, self.ignore_label)
        # max(z, 0) - z t + log(1 + exp(-|z|)): the stable binary cross-entropy of a logit z
        bce = ops.maximum(logits, 0.0) - logits * targets + ops.log1p(ops.exp(-ops.abs(logits)))
        if valid is None:
            return ops.mean(bce)
        return ops.sum(bce * valid) / ops.maximum(ops.sum(valid) * len(self.regions), _TINY)


class KerasRegionDice:
    """:class:`TorchRegionDice` in Keras' argument order: ``loss(labels, logits) -> scalar``."""

    def __init__(
        self, regions: Sequence[Sequence[int]], smooth: float = 1.0, ignore_label: int | None = None
    ) -> None:
        _checked("dice", {"smooth": smooth})
        self.regions = _checked_regions(regions)
        self.smooth = float(smooth)
        self.ignore_label = _checked_ignore(ignore_label)

    def __call__(self, labels: Any, logits: Any) -> Any:
        from keras import ops

        logits, targets, valid = _keras_regions(labels, logits, self.regions, self.ignore_label)
        probs = ops.sigmoid(logits)
        if valid is not None:
            probs, targets = probs * valid, targets * valid
        axes = [0, *range(2, len(probs.shape))]
        intersection = ops.sum(probs * targets, axis=axes)
        total = ops.sum(probs, axis=axes) + ops.sum(targets, axis=axes)
        return 1.0 - ops.mean((2.0 * intersection + self.smooth) / (total + self.smooth))


class KerasRegionTversky:
    """:class:`TorchRegionTversky` in Keras' argument order: ``loss(labels, logits) -> scalar``."""

    def __init__(
        self,
        regions: Sequence[Sequence[int]],
        alpha: float = 0.3,
        beta: float = 0.7,
        smooth: float = 1.0,
        ignore_label: int | None = None,
    ) -> None:
        _checked("tversky", {"alpha": alpha, "beta": beta, "smooth": smooth})
        self.regions = _checked_regions(regions)
        self.alpha, self.beta, self.smooth = float(alpha), float(beta), float(smooth)
        self.ignore_label = _checked_ignore(ignore_label)

    def __call__(self, labels: Any, logits: Any) -> Any:
        from keras import ops

        logits, targets, valid = _keras_regions(labels, logits, self.regions, self.ignore_label)
        probs = ops.sigmoid(logits)
        if valid is not None:
            probs, targets = probs * valid, targets * valid
        axes = [0, *range(2, len(probs.shape))]
        tp = ops.sum(probs * targets, axis=axes)
        fp = ops.sum(probs, axis=axes) - tp
        fn = ops.sum(targets, axis=axes) - tp
        index = (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth)
        return 1.0 - ops.mean(index)


_CLASSES: dict[str, dict[str, type]] = {
    "torch": {"ce": TorchCrossEntropy, "dice": TorchSoftDice, "focal": TorchFocal, "tversky": TorchTversky},
    "keras": {"ce": KerasCrossEntropy, "dice": KerasSoftDice, "focal": KerasFocal, "tversky": KerasTversky},
}
#: the losses of region training (``ce`` is the binary cross-entropy of each region's logit)
REGION_LOSSES = ("ce", "dice", "tversky")
_REGION_CLASSES: dict[str, dict[str, type]] = {
    "torch": {"ce": TorchRegionBCE, "dice": TorchRegionDice, "tversky": TorchRegionTversky},
    "keras": {"ce": KerasRegionBCE, "dice": KerasRegionDice, "tversky": KerasRegionTversky},
}


def _framework(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    return "torch" if backend == "torch" else "keras"


def make_loss(
    name: str,
    backend: str = "torch",
    *,
    regions: Sequence[Sequence[int]] | None = None,
    ignore_label: int | None = None,
    **args: Any,
) -> Callable[[Any, Any], Any]:
    """The loss ``name`` (one of :data:`LOSSES`) for ``backend`` with ``args``
    (:data:`LOSS_ARGUMENTS`), in the framework's argument order.

    Args:
        regions: region training (``data.regions``): one sigmoid output per region, ``ce`` the binary
            cross-entropy and ``dice``/``tversky`` on the sigmoids (:data:`REGION_LOSSES`).
        ignore_label: voxels with this label add nothing to the loss (``data.ignore_label``).

    Raises:
        ValueError: an unknown name or backend, or an invalid argument (the message names it).
    """
    if name not in LOSSES:
        raise ValueError(
            f"unknown loss {name!r}; use one of {list(LOSSES)} (joined with '+' in training.loss)"
        )
    _checked(name, args)
    if regions is None:
        return _CLASSES[_framework(backend)][name](**args, ignore_label=ignore_label)
    problems = _region_problems(name, args, "loss")
    if problems:
        raise ValueError("; ".join(problems))
    return _REGION_CLASSES[_framework(backend)][name](regions, **args, ignore_label=ignore_label)


def _region_problems(name: str, args: Mapping[str, Any], where: str) -> list[str]:
    if name not in REGION_LOSSES:
        return [
            f"{where} {name!r}: not defined for region training (data.regions); use "
            f"{' / '.join(REGION_LOSSES)} (e.g. 'ce+dice', nnU-Net's BCE + Dice)"
        ]
    if args.get("class_weights") is not None:
        return [
            f"{where} {name!r}: class_weights do not apply to region training (one binary output per "
            "region); remove training.loss_args.ce.class_weights"
        ]
    return []


# --- deep supervision -----------------------------------------------------------------------------


class DeepSupervisionLoss:
    """A loss over all outputs of a deep-supervision network: ``sum_k w_k * loss(output_k,
    labels_k)``, ``labels_k`` the labels subsampled with step ``strides[k]`` per spatial axis
    (``labels[:, ::s_1, ::s_2, ...]``, as ``delira.models`` UNets do), outputs of weight 0 skipped
    (computed times 0 under torch DDP with several processes, which needs every head in the graph).

    The trainers hand such a loss the whole list of outputs (instead of letting the network weight
    the per-output losses); given one tensor it is ``loss`` itself.

    Args:
        loss: the per-output loss, in the framework's argument order.
        backend: ``"torch"`` (called ``(predictions, labels)``) or ``"tf"``/``"keras"``
            (``(labels, predictions)``).
        strides: per output, the subsampling step of each spatial axis (a UNet's
            ``config.cumulative_strides``); None: ``labels size // output size`` per axis, from the
            static shapes.
        weights: per output, or None for :func:`deep_supervision_weights` of the number of outputs.
    """

    #: the trainers pass this loss every output of the network (see ``BaseNetworkTrainer``)
    takes_all_outputs = True

    def __init__(
        self,
        loss: Callable[[Any, Any], Any],
        backend: str = "torch",
        strides: Sequence[Sequence[int]] | None = None,
        weights: Sequence[float] | None = None,
    ) -> None:
        if not callable(loss):
            raise TypeError(f"loss must be callable, got {type(loss).__name__}")
        self.loss = loss
        self.targets_first = _framework(backend) == "keras"
        self.strides = None if strides is None else [tuple(int(s) for s in step) for step in strides]
        if weights is not None and not all(_is_number(w) and w >= 0 for w in weights):
            raise ValueError(f"weights must be non-negative numbers, one per output, got {weights!r}")
        self.weights = None if weights is None else [float(w) for w in weights]

    def __repr__(self) -> str:
        return f"DeepSupervisionLoss({self.loss!r})"

    def _steps(self, k: int, prediction: Any, labels: Any) -> tuple[int, ...]:
        if self.strides is not None:
            if k >= len(self.strides):
                raise ValueError(
                    f"the network returned more than {len(self.strides)} outputs, the number of strides given; "
                    "pass one stride per output"
                )
            return self.strides[k]
        spatial_pred, spatial_label = tuple(prediction.shape[2:]), tuple(labels.shape[1:])
        if None in spatial_pred or None in spatial_label or len(spatial_pred) != len(spatial_label):
            raise ValueError(
                f"cannot infer the subsampling of output {k} (shape {tuple(prediction.shape)}) from labels of "
                f"shape {tuple(labels.shape)}; pass strides= (the network's cumulative strides)"
            )
        return tuple(int(a) // int(b) for a, b in zip(spatial_label, spatial_pred))

    def _call(self, prediction: Any, labels: Any) -> Any:
        return self.loss(labels, prediction) if self.targets_first else self.loss(prediction, labels)

    def __call__(self, first: Any, second: Any) -> Any:
        predictions, labels = (second, first) if self.targets_first else (first, second)
        if not isinstance(predictions, (list, tuple)):
            return self._call(predictions, labels)
        if len(labels.shape) == len(predictions[0].shape):  # (N, 1, *spatial)
            labels = labels[:, 0]
        weights = self.weights or deep_supervision_weights(len(predictions))
        if len(weights) != len(predictions):
            raise ValueError(
                f"{len(weights)} weights for {len(predictions)} outputs; give one weight per output"
            )
        total: Any = None
        keep = compute_zero_weight_outputs()  # under DDP every head must take part (times 0)
        for k, (prediction, weight) in enumerate(zip(predictions, weights)):
            if weight == 0 and not keep:
                continue
            steps = self._steps(k, prediction, labels)
            sub = (
                labels[(slice(None), *(slice(None, None, s) for s in steps))]
                if any(s != 1 for s in steps)
                else labels
            )
            value = weight * self._call(prediction, sub)
            total = value if total is None else total + value
        if total is None or not any(w > 0 for w in weights):
            raise ValueError("every deep-supervision weight is 0; give at least one positive weight")
        return total


# --- what a task trains with ------------------------------------------------------------------------
def segmentation_losses(
    spec: str,
    backend: str = "torch",
    num_classes: int | None = None,
    loss_args: Mapping[str, Mapping[str, Any]] | None = None,
    deep_supervision_strides: Sequence[Sequence[int]] | None = None,
    *,
    regions: Sequence[Sequence[int]] | None = None,
    ignore_label: int | None = None,
) -> dict[str, Callable[[Any, Any], Any]]:
    """The losses of ``training.loss`` (``"ce+dice"``, ``"focal"``, ``"ce+tversky"``, ...): one
    entry per ``+``-separated name, in that order, built with ``loss_args[name]``; wrapped in
    :class:`DeepSupervisionLoss` (nnU-Net's weights) when ``deep_supervision_strides`` (the
    network's per-output strides) is given. With ``regions`` (``data.regions``) the losses are the
    region losses (:data:`REGION_LOSSES`: ``ce`` the binary cross-entropy of each region's logit,
    ``dice``/``tversky`` on the sigmoids; ``"ce+dice"`` is nnU-Net's ``DC_and_BCE_loss``); with
    ``ignore_label`` (``data.ignore_label``) the voxels of that label add nothing to any loss (also
    under deep supervision: the labels are subsampled by picking voxels, so they keep their label).

    Raises:
        ValueError: an unknown or repeated loss name, or invalid arguments (every problem listed).
    """
    names = [n.strip() for n in str(spec).split("+")]
    args = dict(loss_args or {})
    problems = [
        f"training.loss: unknown loss {n!r}; join names of {list(LOSSES)} with '+' (e.g. 'ce+dice')"
        for n in names
        if n not in LOSSES
    ]
    if len(set(names)) != len(names):
        problems.append(f"training.loss: {spec!r} names a loss twice")
    for name, values in args.items():
        if name not in names:
            problems.append(f"training.loss_args.{name}: loss {name!r} is not in training.loss {spec!r}")
        else:
            problems += check_loss_args(name, values, num_classes, where=f"training.loss_args.{name}")
    if regions is not None:
        for name in names:
            problems += _region_problems(name, dict(args.get(name) or {}), "training.loss:")
    if problems:
        raise ValueError("; ".join(problems))
    losses = {
        name: make_loss(
            name, backend, regions=regions, ignore_label=ignore_label, **dict(args.get(name) or {})
        )
        for name in names
    }
    if deep_supervision_strides is not None:
        losses = {
            name: DeepSupervisionLoss(fn, backend, strides=deep_supervision_strides)
            for name, fn in losses.items()
        }
    return losses
