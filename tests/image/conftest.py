"""The kernel-initrd image, built once per session from cached .debs."""

from __future__ import annotations

from pathlib import Path

import pytest

from powernode.image.build import build
from tests.conftest import require_tool
from tests.package_cache import EPOCH, package_cache


def image_cache(factory: pytest.TempPathFactory) -> Path:
    """A build cache whose .debs are the persistent ones (a rebuild downloads nothing)."""
    return package_cache(factory.getbasetemp() / "image-cache")


@pytest.fixture(scope="session")
def kernel_initrd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for tool in ("apt-get", "dpkg-deb", "depmod"):
        require_tool(tool)
    out = tmp_path_factory.mktemp("kernel-initrd") / "amd64"
    return build("kernel-initrd", "amd64", out, cache=image_cache(tmp_path_factory), epoch=EPOCH)
