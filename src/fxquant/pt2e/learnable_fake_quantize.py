"""``torchao.quantization.pt2e.learnable_fake_quantize`` layout: :class:`LearnableFakeQuantize`
(LSQ / LSQ+, scale and zero point learned by backprop) and the module-wide switches
``enable_range_learning`` / ``disable_range_learning``.

``LearnableFakeQuantize`` is fxquant's one implementation (:mod:`fxquant.fake_quantize.learnable`).
The switches are meant for ``model.apply(...)`` and leave every other module alone.
"""

from torch import nn

from fxquant.fake_quantize.learnable import LearnableFakeQuantize

__all__ = ["LearnableFakeQuantize", "disable_range_learning", "enable_range_learning"]


def enable_range_learning(mod: nn.Module) -> None:
    """Learn the scale and zero point of ``mod`` if it is a :class:`LearnableFakeQuantize`:
    parameters get gradients and the observer stops overwriting them (fake quantization is
    left as it is).

    >>> prepared.apply(enable_range_learning)
    """
    if isinstance(mod, LearnableFakeQuantize):
        mod.toggle_qparam_learning(enabled=True).toggle_observer_update(enabled=False)


def disable_range_learning(mod: nn.Module) -> None:
    """Stop learning the scale and zero point of ``mod`` if it is a
    :class:`LearnableFakeQuantize` (they keep their current values)."""
    if isinstance(mod, LearnableFakeQuantize):
        mod.toggle_qparam_learning(enabled=False)
