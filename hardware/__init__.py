"""Hardware cost models: what a layer costs on a target, over a grid of bit-width and width choices."""
from hardware.base import Cost, CostModel, LayerSpec, choice_grid

__all__ = ["Cost", "CostModel", "LayerSpec", "choice_grid"]
