"""prepare for any flow: annotated graph → plan → observers → inserted."""

from __future__ import annotations

from torch.fx import GraphModule

from fxquant.engine.create_observers import build_observers
from fxquant.engine.insert_observers import insert_observers
from fxquant.engine.plan import ObserverPlan, plan_observers
from fxquant.pt2e.quantizer.quantizer import Quantizer

__all__ = ["PLAN_META_KEY", "prepare_annotated"]

# The printable plan is kept on the prepared model (``model.meta[PLAN_META_KEY]``).
PLAN_META_KEY = "fxquant_observer_plan"


def prepare_annotated(
    model: GraphModule, quantizer: Quantizer | None = None, *, is_qat: bool = False
) -> GraphModule:
    """Insert observers (``is_qat``: the specs' fake-quantizers) for the annotations already
    on ``model``'s nodes. ``quantizer.prepare_obs_or_fq_callback`` sees them before
    insertion."""
    plan: ObserverPlan = plan_observers(model)
    observers = build_observers(plan, is_qat=is_qat)
    if quantizer is not None:
        by_site = {site: observers[g] for site, g in plan.group_of.items()}
        quantizer.prepare_obs_or_fq_callback(model, by_site)
    insert_observers(model, plan, observers)
    model.meta[PLAN_META_KEY] = str(plan)
    return model
