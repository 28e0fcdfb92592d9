"""Which tiers ``opsctl up`` runs with (``opsctl.up.system.tenants_policy_file``)."""

from __future__ import annotations

from pathlib import Path

from opsctl.up.system import tenants_policy_file


def test_the_setting_then_the_policy_directory_then_none(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    chosen = tmp_path / "elsewhere.yaml"
    assert tenants_policy_file(chosen, policies) == chosen, "OPSCTL_TENANTS_POLICY wins"
    assert tenants_policy_file(None, policies) is None, "no tenants.yaml: the built-in tier, no quotas"
    (policies / "tenants.yaml").write_text("kind: tenants\n")
    found = tenants_policy_file(None, policies)
    assert found == (policies / "tenants.yaml").resolve() and found.is_absolute(), "the workers read it too"
    (policies / "tenants.yaml").unlink()
    (policies / "tenants.yaml").mkdir()
    assert tenants_policy_file(None, policies) is None, "a directory is not a policy"
