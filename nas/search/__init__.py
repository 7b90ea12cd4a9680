"""The search: the loop and its step (``loop``), the expected cost of a choice grid (``cost``), derivation of one
network (``derive``: argmax, projection onto the budgets, budget filling), budgets and the cheapest network of a
space (``budget``), and Pareto fronts (``pareto``). The names below are the package's public API."""
from nas.search.budget import (Budget, Constraint, check_feasible, check_room, cheapest_choices, cheapest_network,
                               cost_lower_bound, resolve_budget)
from nas.search.derive import discrete_costs, fill_budget, fit_to_budget, onehot_probs
from nas.search.loop import SearchConfig, SearchResult, StepConfig, arch_optimizer, search, step_config, train_supernet
