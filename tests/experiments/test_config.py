"""The Hydra schema repeats the library's defaults (nas/ takes typed dataclasses, never a DictConfig):
they must not drift apart, and the shipped YAMLs must not override them by accident."""
import dataclasses

from experiments.config import FinetuneConfig, SearchGroupConfig
from nas.search import SearchConfig
from nas.models.space import SearchSpace
from nas.train.finetune import TrainConfig


def _defaults(cls):
  return {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
          for f in dataclasses.fields(cls)}


def test_search_schema_defaults_match_the_library():
  schema = _defaults(SearchGroupConfig)
  library = {**_defaults(SearchSpace), **_defaults(SearchConfig)}
  shared = set(schema) & set(library)
  assert shared >= {"w_bits", "a_bits", "width_mults", "steps", "warmup_steps", "lr", "arch_lr", "tau_start",
                    "tau_end", "dual_lr", "entropy_weight", "hard", "method", "per_channel_w"}
  for name in shared:
    a, b = schema[name], library[name]
    a = tuple(a) if isinstance(a, list) else a
    assert a == b, f"search.{name}: schema default {a!r} != library default {b!r}"
  # Every field of the schema reaches the library (nothing configurable that is then ignored); the shared-supernet
  # fields are read by the app, which calls nas.search.loop.train_supernet and search(frozen_weights=True) with them.
  app_only = {"shared", "shared_steps", "arch_steps", "shared_arch_lr", "shared_entropy_weight"}
  assert set(schema) - app_only <= set(library), set(schema) - app_only - set(library)


def test_finetune_schema_defaults_match_the_library():
  schema, library = _defaults(FinetuneConfig), _defaults(TrainConfig)
  for name in set(schema) & set(library):
    assert schema[name] == library[name], f"finetune.{name}: {schema[name]!r} != {library[name]!r}"
