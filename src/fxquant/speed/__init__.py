"""Speed-aware planning: measure each quantized op at its real shapes on this machine (fp32,
the int8 kernel it lowers to, the quantize/dequantize boundaries) and keep in float the ops
int8 would make slower.

    >>> plan = plan_for_speed(gm, (x,), quantizer, threads=1)
    >>> print(plan)
    >>> prepared = prepare_pt2e(gm, plan.keep_float_quantizer(quantizer))
"""

from fxquant.speed.cost_model import CostTable, UnitCost, estimate_costs
from fxquant.speed.plan import SpeedPlan, SpeedPlanRow
from fxquant.speed.plan_for_speed import plan_for_speed, plan_from_costs
from fxquant.speed.planner import PlanProblem, choose_int8_units, plan_cost
from fxquant.speed.timing import TimingCache
from fxquant.speed.units import OpUnit, TensorFlow, UnitGraph, find_units

__all__ = [
    "CostTable",
    "OpUnit",
    "PlanProblem",
    "SpeedPlan",
    "SpeedPlanRow",
    "TensorFlow",
    "TimingCache",
    "UnitCost",
    "UnitGraph",
    "choose_int8_units",
    "estimate_costs",
    "find_units",
    "plan_cost",
    "plan_for_speed",
    "plan_from_costs",
]
