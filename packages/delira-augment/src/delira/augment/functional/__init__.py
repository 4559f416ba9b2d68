"""Stateless augmentation operations with explicit parameters (no randomness).

Every function takes arrays shaped ``(N, C, *spatial)``, ``(C, *spatial)`` or ``(*spatial)`` as
documented on it and returns a new array of the input's type (numpy in, numpy out; torch in,
torch out).
"""

from __future__ import annotations

from delira.augment.functional.flip import flip

__all__ = ["flip"]
