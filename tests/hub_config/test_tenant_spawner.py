"""What both spawners share (hub_config.tenant_spawner): the configurable tenants file, re-read
only when it changes, set once for spawner and authenticator (`Tenancy`), and the hub user's
groups as the policy expects them."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from traitlets.config import Config

from hub_config import jupyterhub_config
from hub_config.auth import LocalGroupsAuthenticator
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


def test_one_tenancy_setting_configures_spawner_and_authenticator() -> None:
    config = Config()
    config.Tenancy.tenants_file = "/etc/workbench/tenants.yaml"
    assert TenantLocalSpawner(config=config).tenants_file == "/etc/workbench/tenants.yaml"
    assert LocalGroupsAuthenticator(config=config).tenants_file == "/etc/workbench/tenants.yaml"
    # A class's own section still wins, for that class alone.
    config.TenantLocalSpawner.tenants_file = "/srv/spawner-tenants.yaml"
    assert TenantLocalSpawner(config=config).tenants_file == "/srv/spawner-tenants.yaml"
    assert LocalGroupsAuthenticator(config=config).tenants_file == "/etc/workbench/tenants.yaml"


def test_the_hub_config_sets_the_tenants_file_once(tmp_path: Path) -> None:
    tenants = tmp_path / "tenants.yaml"
    shutil.copyfile(EXAMPLE, tenants)
    config = Config()
    jupyterhub_config.configure(config, {
        "WORKBENCH_STATE_DIR": str(tmp_path / "state"), "WORKBENCH_TENANTS_FILE": str(tenants),
        "WORKBENCH_PROXY_COMMAND": "/bin/true", "WORKBENCH_CULLER": "0",
    })
    assert config.Tenancy.tenants_file == str(tenants)
    assert TenantLocalSpawner(config=config).tenants_file == str(tenants)
    assert LocalGroupsAuthenticator(config=config).tenants_file == str(tenants)
