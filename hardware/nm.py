"""N:M semi-structured weight sparsity: one type, one validator, from the config to the cost models.

An N:M pattern keeps N weights in every group of M consecutive weights along a kernel's reduction axis
(NVIDIA Ampere's sparse tensor cores read 2:4). It is written ``"2:4"`` (a baseline's ``baseline.nm``), ``[2, 4]``
(a model's ``model.args.nm_patterns`` in YAML) or ``NM(2, 4)``; :meth:`NM.parse` reads every form and is the
only place a pattern is checked. A supernet's N:M choice takes integer values (:attr:`NM.code`: 100 N + M,
``DENSE`` = 0 for dense), since a choice's candidates are numbers.

References:
  Mishra et al., "Accelerating Sparse Deep Neural Networks", arXiv:2104.08378, 2021 (2:4 on Ampere, and its
  compressed format: 2 index bits per kept weight).
"""
from __future__ import annotations

import math
from typing import NamedTuple

DENSE = 0  # the N:M choice value of the dense (unpruned) candidate


class NM(NamedTuple):
  """An N:M pattern: ``n`` weights kept in every ``m``. A tuple, so ``n, m = pattern`` works."""
  n: int
  m: int

  def __str__(self) -> str:
    return f"{self.n}:{self.m}"

  @property
  def density(self) -> float:
    """The share of the weights kept, N / M."""
    return self.n / self.m

  @property
  def code(self) -> int:
    """The pattern as a choice value: 100 N + M (2:4 -> 204, 1:4 -> 104)."""
    return 100 * self.n + self.m

  @property
  def index_bits(self) -> int:
    """Metadata bits per kept weight: its position among M, ceil(log2 M) (2 for 2:4, as NVIDIA stores it)."""
    return int(math.ceil(math.log2(self.m)))

  @classmethod
  def parse(cls, value, field: str = "N:M pattern") -> "NM | None":
    """A pattern from any of its forms: ``NM``, ``"2:4"``, ``(2, 4)`` / ``[2, 4]``, a choice code (204), or
    None / ``"dense"`` / ``DENSE`` for dense (returns None).

    Raises:
      ValueError: one sentence naming ``field``, unless 1 <= N < M and 2 <= M < 100.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "dense", "none", "null")):
      return None
    if isinstance(value, (int,)) and not isinstance(value, bool):
      if value == DENSE:
        return None
      value = (value // 100, value % 100)
    try:
      parts = value.split(":") if isinstance(value, str) else list(value)
      if len(parts) != 2 or any(isinstance(p, bool) or float(p) != int(float(p)) for p in parts):
        raise ValueError
      n, m = (int(float(p)) for p in parts)
    except (TypeError, ValueError):
      raise ValueError(f"{field}={value!r} is not an N:M pattern; write it as N:M (\"2:4\") or [N, M] "
                       f"([2, 4]), or null for dense.") from None
    if not (2 <= m < 100 and 1 <= n < m):
      raise ValueError(f"{field}={value!r} must have 1 <= N < M and 2 <= M < 100, e.g. 2:4.")
    return cls(n, m)

  @classmethod
  def from_code(cls, code) -> "NM | None":
    """The pattern of a choice value (None for ``DENSE``)."""
    return cls.parse(int(code), "N:M choice value")

  def check_reduction(self, rows: int, where: str) -> None:
    """Raises unless M divides the ``rows`` of a kernel's reduction axis (a partial group would prune a
    different share of the weights than the pattern says, and no sparse kernel runs it)."""
    if rows % self.m:
      raise ValueError(f"{where}: the N:M pattern {self} needs the reduction width ({rows}) to be a multiple of "
                       f"M = {self.m}; choose an M that divides it, e.g. 2:4 for a multiple of 4.")


def code_of(pattern) -> int:
  """The choice value of any form of a pattern (``DENSE`` for dense)."""
  nm = NM.parse(pattern)
  return DENSE if nm is None else nm.code
