"""``/netboot/{instance_id}/…``: what a machine's iPXE fetches (no token; services/netboot.py)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse, PlainTextResponse
from sqlalchemy.orm import Session

from powernode.platform.api.deps import State
from powernode.platform.problems import NotFoundError, ProviderError
from powernode.platform.services import boot_image, netboot

router = APIRouter(tags=["netboot"])
PREFIX = "/api/v1/system"


@router.get(
    "/netboot/{instance_id}/script.ipxe",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}}},
)
def netboot_script(instance_id: str, state: State) -> PlainTextResponse:
    """The instance's iPXE script: kernel, initrd, cmdline with its id and the platform URL."""
    with Session(state.engine) as session:
        netboot.live_instance(session, instance_id)
    image = _image(state)
    url = state.settings.effective_guest_platform_url
    base = f"{url}{PREFIX}/netboot/{instance_id}"
    return PlainTextResponse(netboot.script(image, instance_id, url, base))


def _image(state: State) -> boot_image.BootImage:
    """The platform's kernel-initrd image; without one there is nothing to netboot (404)."""
    try:
        return boot_image.load(state.settings.effective_image_dir)
    except ProviderError as e:
        raise NotFoundError(f"this platform serves no netboot image: {e.detail}") from e


def _file(instance_id: str, state: State, name: str) -> FileResponse:
    with Session(state.engine) as session:
        netboot.live_instance(session, instance_id)
    image = _image(state)
    if name == "kernel":
        if image.netboot_kernel is None:
            raise NotFoundError(
                "this platform's image has no bzImage (vmlinuz) to netboot: iPXE cannot boot "
                "the PVH vmlinux"
            )
        path = image.netboot_kernel
    else:
        path = image.initrd
    return FileResponse(path, media_type="application/octet-stream", filename=name)


@router.get("/netboot/{instance_id}/kernel", response_class=FileResponse)
def netboot_kernel(instance_id: str, state: State) -> FileResponse:
    """The kernel of the platform's kernel-initrd image."""
    return _file(instance_id, state, "kernel")


@router.get("/netboot/{instance_id}/initrd", response_class=FileResponse)
def netboot_initrd(instance_id: str, state: State) -> FileResponse:
    """The initramfs of the platform's kernel-initrd image."""
    return _file(instance_id, state, "initrd")
