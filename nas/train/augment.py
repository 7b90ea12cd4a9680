"""Data augmentation in JAX, to run on the accelerator inside the jitted train step (no host-side input work
that could starve the step).

References: He, Zhang, Ren, Sun, Deep Residual Learning for Image Recognition, CVPR 2016 (the CIFAR recipe:
pad 4 pixels, take a random 32x32 crop, flip horizontally with probability 1/2).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax


@functools.partial(jax.jit, static_argnames=("pad", "flip"))
def random_crop_flip(key: jax.Array, x: jax.Array, pad: int = 4, flip: bool = True) -> jax.Array:
  """Pads each image with ``pad`` zeros on every side, takes a random crop of the original size, and (with
  ``flip``) mirrors it left-right with probability 1/2; each image of the batch draws its own offsets and flip.

  The padding is zeros, as in the ResNet CIFAR recipe and torchvision's RandomCrop default. Applied to
  normalised images (nas.train.data.load_cifar10), zero is the training set's mean colour rather than black.

  Args:
    key: a PRNG key; the same key gives the same augmentation.
    x: images, NHWC (batch, height, width, channels).
    pad: pixels added on each side; the crop offsets are uniform on 0..2*pad in each direction. Static.
    flip: whether to flip horizontally at random. Static.

  Returns:
    Images of the shape and dtype of ``x``.
  """
  n, h, w, c = x.shape
  offset_key, flip_key = jax.random.split(key)
  offsets = jax.random.randint(offset_key, (n, 2), 0, 2 * pad + 1)
  padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

  def crop(image, offset):
    return lax.dynamic_slice(image, (offset[0], offset[1], jnp.zeros((), offset.dtype)), (h, w, c))

  out = jax.vmap(crop)(padded, offsets)
  if flip:
    flipped = jax.random.bernoulli(flip_key, 0.5, (n,))
    out = jnp.where(flipped[:, None, None, None], out[:, :, ::-1, :], out)
  return out
