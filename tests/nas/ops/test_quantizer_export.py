"""A PACT network exports to the integer network (nas.deploy.integer) like an LSQ one: the step is alpha / Q_P."""
import numpy as np
import pytest

from nas.deploy import integer
from nas.deploy.verify import jax_logits
from nas.models import build_model
from nas.models.space import SearchSpace
from nas.train.datasets.digits import load_digits
from nas.train.finetune import TrainConfig, calibrate, finetune


@pytest.mark.parametrize("quantizer", ["pact"])
def test_integer_network_of_a_pact_network_agrees_with_jax(quantizer):
  data = load_digits()
  space = SearchSpace(w_bits=(2, 4, 8), a_bits=(4, 8), width_mults=(1.0,), per_channel_w=True,
                      quantizer=quantizer)
  kw = dict(widths=(8, 16), strides=(1, 2), input_shape=data.input_shape, num_classes=data.num_classes)
  sup = build_model("digits_cnn", space, seed=0, **kw)
  choices = {n: max(c.values) for n, c in sup.choices.items()}
  cout = sup.convs[1].spec.cout
  choices["convs.1.w_bits"] = tuple([2, 4, 8][i % 3] for i in range(cout))  # mixed per-channel weight bits
  choices["convs.1.a_bits"] = 4
  net = build_model("digits_cnn", space, seed=0, arch=sup.architecture(choices), **kw)
  calibrate(net, data.x_train[:64])
  result = finetune(net, data, TrainConfig(steps=150, batch_size=64))
  assert result["test_accuracy"] > 0.5  # trained, if briefly (PACT starts at alpha = 8: slowly)
  head = net.head.aq.step[...]
  assert float(head[0]) < 8.0  # alpha moved off its initial value (L2, clipping)
  net.eval()
  inet = integer.from_network(net)
  _, logits = integer.run(inet, data.x_test)
  jax_pred = jax_logits(net, data.x_test).argmax(-1)
  agree = float(np.mean(logits.argmax(-1) == jax_pred))
  assert agree >= 0.99, agree
  # the integer network's steps are alpha / Q_P
  first = inet.layers[0]
  np.testing.assert_allclose(first.in_step, float(net.convs[0].aq.step[...][0]) / 255, rtol=1e-6)
