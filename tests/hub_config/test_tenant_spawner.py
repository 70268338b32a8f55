"""What both spawners share (hub_config.tenant_spawner): the configurable tenants file, re-read
only when it changes, and the hub user's groups as the policy expects them."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from traitlets.config import Config

from hub_config.local_spawner import TenantLocalSpawner
from hub_config.tenant_spawner import TenantSpawnerMixin
from hub_config.tenants import TenantsFileError

EXAMPLE = Path(__file__).resolve().parents[2] / "hub_config" / "tenants.example.yaml"


def test_tenants_are_cached_until_the_file_or_the_setting_changes(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    shutil.copyfile(EXAMPLE, path)
    mixin = TenantSpawnerMixin(tenants_file=str(path))
    first = mixin.tenants()
    assert mixin.tenants() is first  # unchanged file: not parsed again
    path.write_text(EXAMPLE.read_text().replace("wb-classroom", "wb-class"))
    assert mixin.tenants().get("classroom").namespace == "wb-class"
    mixin.tenants_file = str(tmp_path / "absent.yaml")
    with pytest.raises(TenantsFileError, match="no such tenants file"):
        mixin.tenants()


@pytest.mark.parametrize(("user", "groups"), [
    (SimpleNamespace(groups=[SimpleNamespace(name="b"), SimpleNamespace(name="a")]), ["a", "b"]),
    (SimpleNamespace(groups=None), []),
    (SimpleNamespace(), []),
], ids=["sorted", "none", "no-attribute"])
def test_group_names(user, groups: list[str]) -> None:
    mixin = TenantSpawnerMixin()
    mixin.user = user
    assert mixin.group_names() == groups


def test_each_spawner_is_configured_by_its_own_name() -> None:
    config = Config()
    config.TenantLocalSpawner.tenants_file = "/etc/workbench/tenants.yaml"
    assert TenantLocalSpawner(config=config).tenants_file == "/etc/workbench/tenants.yaml"
    kube = pytest.importorskip("hub_config.kube_spawner",
                               reason="jupyterhub-kubespawner is not installed (hub extra)")
    assert "tenants_file" in kube.TenantKubeSpawner.class_trait_names(config=True)
    assert kube.TenantKubeSpawner.class_traits()["tenants_file"].default() == "tenants.yaml"
