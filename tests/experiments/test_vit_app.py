"""The search app with the ViT supernet: uniform baselines with N:M sparsity, their one-sentence errors, and a
debug search whose result records the transformer ops with their chosen patterns and heads."""
import json
import pathlib

import pytest
from hydra import compose, initialize_config_dir

from experiments import search as app
from experiments.baselines import baseline_choices
from experiments.config import validate
from hardware.nm import NM
from nas import models
from nas.ops import sparsity
from nas.models.space import SearchSpace

CONF = str(pathlib.Path(__file__).resolve().parents[2] / "conf")
TINY = ["model=vit", "model.args.patch=4", "model.args.embed=16", "model.args.heads=2", "model.args.mlp=16",
        "model.args.depth=1", "model.args.mlp_groups=2", "wandb.mode=disabled", "checkpoint.dir=null"]


def _compose(overrides):
  with initialize_config_dir(config_dir=CONF, version_base="1.3"):
    return compose(config_name="config", overrides=[*TINY, *overrides])


@pytest.mark.parametrize("bad", ["2-4", "4:4", "0:4", "x:y"])
def test_bad_nm_pattern_is_refused_naming_the_field(bad):
  cfg = _compose(["baseline.kind=uniform", f"baseline.nm={bad}"])
  with pytest.raises(ValueError, match=r"baseline.nm=.* must be an N:M pattern 'N:M'"):
    validate(cfg)


def test_uniform_baseline_sets_every_pattern_heads_and_bits():
  cfg = _compose(["baseline.kind=uniform", "baseline.w_bits=4", "baseline.a_bits=4", "baseline.nm=2:4",
                  "baseline.width_mult=0.5"])
  net = models.build_model("vit", SearchSpace(), seed=0, input_shape=(8, 8, 1), patch=4, embed=16, heads=2,
                           mlp=16, depth=1, mlp_groups=2)
  choices = baseline_choices(net, cfg)
  nm = {n: v for n, v in choices.items() if n.endswith(".nm")}
  assert len(nm) == 6 and set(nm.values()) == {NM(2, 4).code}  # q, k, v, proj, fc1, fc2
  assert choices["blocks.0.attn.heads"] == 1 and choices["blocks.0.mlp.width"] == 8  # half of 2 heads, 16
  assert {v for n, v in choices.items() if n.endswith(".w_bits") and not net.choices[n].fixed} == {4}
  cfg = _compose(["baseline.kind=uniform", "baseline.nm=1:8"])
  with pytest.raises(ValueError, match="baseline.nm='1:8' is not a candidate"):
    baseline_choices(net, cfg)


def test_debug_search_records_transformer_ops(tmp_path):
  # No pruned groups: a debug search's logits barely move from uniform, whose argmax prunes every group (ties go
  # to the first candidate, 0 bits), and a wholly pruned projection skips its attention or MLP.
  r = app.run(_compose(["debug=true", "hardware=gpu", "budget.room=0.5", "model.args.prune_groups=false"]),
              tmp_path)
  kinds = {l["kind"] for l in r["architecture"]["layers"]}
  assert {"linear", "matmul", "softmax", "layernorm", "conv", "dense"} <= kinds
  assert r["cost"]["gpu"]["latency_s"] <= r["budget"]["value"] * (1 + 1e-9)
  assert json.loads((tmp_path / "result.json").read_text())["model"] == "vit"
