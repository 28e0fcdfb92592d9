"""`opsctl up`'s own decisions (`opsctl.up.system`): which tiers it runs with, when it prints its banner."""

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


def test_the_banner_waits_for_the_api_to_listen(tmp_path: Path) -> None:
    """``System.serve(on_serving=...)``: the banner's lines (curl the API) must work when printed."""
    import threading
    import time
    from types import SimpleNamespace

    from opsctl.up.system import System

    system = System.__new__(System)  # only what _when_serving reads
    system.daemon = None
    server = SimpleNamespace(started=False, should_exit=False)
    printed = threading.Event()
    waiting = threading.Thread(target=system._when_serving, args=(server, printed.set))
    waiting.start()
    time.sleep(0.3)  # a wait that would let a premature banner show; its absence is what is asserted
    assert not printed.is_set(), "printed before the API listens"
    server.started = True
    assert printed.wait(10)
    waiting.join(10)
    stopped = SimpleNamespace(started=False, should_exit=True)
    never = threading.Event()
    system._when_serving(stopped, never.set)
    assert not never.is_set(), "a stop before serving prints nothing"
