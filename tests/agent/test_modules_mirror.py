"""A registry the node dials at another address than the one signatures name.

A QEMU guest reaches the host's registry on 127.0.0.1:PORT as 10.0.2.2:PORT; a node behind
a pull-through mirror dials the mirror. cosign's signature names the registry as it was
signed for (``127.0.0.1:PORT/default/modules/app``), so the agent verifies a reference
naming no host under ``modules_registry_name`` while it dials ``modules_registry``. Here
the same real registry is dialled as ``localhost`` and signed for as ``127.0.0.1``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from powernode.agent.config import load_config
from powernode.agent.modules.layout import NodeLayout
from powernode.agent.modules.reconcile import DesiredModule, PublishPuller
from powernode.errors import ConfigError, PowernodeError
from powernode.oci.refs import parse_reference
from powernode.oci.registry import open_registry
from powernode.publish import push_artifact, sign_artifact
from powernode.signing import generate_private_key, public_key_pem
from tests.oci.registry_fixture import run_registry
from tests.publish.artifacts import make_artifact, object_bytes

pytestmark = [pytest.mark.registry]


def test_a_reference_naming_no_host_is_verified_under_the_registrys_signed_name(
    tmp_path: Path,
) -> None:
    key = generate_private_key()
    art = make_artifact(tmp_path / "art", {"opt/app/id.bin": object_bytes("app", 3000)},
                        name="app", version="1.0.0")  # fmt: skip
    digest = json.loads((art / "module.json").read_text())["composefs_digest"]
    with run_registry(tmp_path / "registry") as reg:
        port = reg.url.rsplit(":", 1)[1]
        signed_as = f"127.0.0.1:{port}"
        with open_registry(reg.url) as r:  # signs for 127.0.0.1:PORT/default/modules/app
            ref = parse_reference("default/modules/app:v1.0.0")
            push_artifact(r, ref, art)
            sign_artifact(r, ref, key)
        module = DesiredModule("app", "1.0.0", digest, 10, "default/modules/app:v1.0.0",
                               {"public_key_pem": public_key_pem(key).decode()})  # fmt: skip
        layout = NodeLayout(root=tmp_path / "root", state=tmp_path / "state")
        mirror = f"http://localhost:{port}"

        # dialled as localhost, no name: the signature names another registry -> refused
        with pytest.raises(PowernodeError, match=rf"made for repository '{signed_as}/"):
            PublishPuller(default_registry=mirror).pull(module, layout)
        assert not list((tmp_path / "state").glob("images/*.cfs"))

        # with the registry's signed name: verified and pulled
        puller = PublishPuller(default_registry=mirror, registry_name=signed_as)
        puller.pull(module, layout)
        assert [p.name for p in (tmp_path / "state/images").glob("*.cfs")] == [
            digest.removeprefix("sha256:") + ".cfs"
        ]
        # another name than the signature's: refused as well (the name is checked, not trusted)
        other = PublishPuller(default_registry=mirror, registry_name="registry.example:5000")
        with pytest.raises(PowernodeError, match="made for repository"):
            other.pull(module, layout)


@pytest.mark.parametrize(
    ("registry", "name", "message"),
    [
        ("http://10.0.2.2:5000", "http://127.0.0.1:5000", "write the registry's host"),
        ("http://10.0.2.2:5000", "127.0.0.1:5000/v2", "write the registry's host"),
        ("", "127.0.0.1:5000", "beside an http"),
        ("oci:/srv/layout", "127.0.0.1:5000", "beside an http"),
    ],
)
def test_a_bad_registry_name_is_refused_with_the_setting_named(
    tmp_path: Path, registry: str, name: str, message: str
) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'modules_registry = "{registry}"\nmodules_registry_name = "{name}"\n')
    with pytest.raises(ConfigError, match=rf"modules_registry_name: .*{message}"):
        load_config(cfg, None, state_dir=tmp_path / "state")
