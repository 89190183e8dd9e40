"""Fixtures for composefs writer tests."""

from __future__ import annotations

import sys

try:
    import powernode.verity.fsverity  # noqa: F401
except ImportError:  # the real module has not landed yet
    from tests.composefs import _fsverity_fallback

    sys.modules["powernode.verity.fsverity"] = _fsverity_fallback
