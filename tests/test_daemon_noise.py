"""What the daemon says and counts as failed: a cycle's sentence once while it repeats (not every 5 s),
and the autoscale job failed only when a service could not be decided or applied (its fallback deciding
on failed metrics is the policy at work, e.g. before Prometheus' first scrape after every start)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from core.errors import OperationFailed
from opsctl.daemon.loop import gist
from opsctl.scaling.jobs import job_autoscale
from tests.conftest import free_port, make_settings
from tests.test_daemon_loop import Scripted


class Saying(Scripted):
    """Cycles that return the sentences given, in order."""

    def __init__(self, sentences: list[str]) -> None:
        super().__init__(["ok"] * len(sentences))
        self.sentences = sentences

    def cycle(self, now: object) -> str:  # type: ignore[override]
        super().cycle(now)  # type: ignore[arg-type]
        return self.sentences[len(self.done) - 1]


@pytest.mark.parametrize(("sentence", "other"), [
    ("leader: 8 jobs scheduled, next autoscale in 12 s", "leader: 8 jobs scheduled, next autoscale in 7 s"),
    ("follower: cannot reach PostgreSQL (port 5432)", "follower: cannot reach PostgreSQL (port 5433)"),
])
def test_gist_ignores_numbers(sentence: str, other: str) -> None:
    assert gist(sentence) == gist(other)


def test_a_repeated_sentence_is_logged_once_at_info_then_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    loop = Saying(["became leader: 8 jobs scheduled",
                   "leader: 8 jobs scheduled, next autoscale in 25 s",
                   "leader: 8 jobs scheduled, next autoscale in 20 s",
                   "leader: 8 jobs scheduled, next autoscale in 15 s",
                   "leader: 8 jobs scheduled, next autoscale in 10 s; running autoscale",
                   "leader: 8 jobs scheduled, next autoscale in 30 s",
                   "leader: 8 jobs scheduled, next autoscale in 25 s"])
    with caplog.at_level(logging.DEBUG, logger="test.loop"):
        loop.loop()
    by_level = {level: [r.getMessage() for r in caplog.records if r.levelno == level]
                for level in (logging.INFO, logging.DEBUG)}
    assert by_level[logging.INFO] == [
        "cycle 1: became leader: 8 jobs scheduled",
        "cycle 2: leader: 8 jobs scheduled, next autoscale in 25 s",
        "cycle 5: leader: 8 jobs scheduled, next autoscale in 10 s; running autoscale",
        "cycle 6: leader: 8 jobs scheduled, next autoscale in 30 s"]
    assert by_level[logging.DEBUG] == [
        "cycle 3: leader: 8 jobs scheduled, next autoscale in 20 s",
        "cycle 4: leader: 8 jobs scheduled, next autoscale in 15 s",
        "cycle 7: leader: 8 jobs scheduled, next autoscale in 25 s"]


def test_the_autoscale_job_fails_when_a_service_cannot_be_decided(db_url: str, tmp_path: Path) -> None:
    """A target nobody answers for: no decision, so the run fails (after deciding the services it could)."""
    nobody = f"http://127.0.0.1:{free_port()}"
    (tmp_path / "autoscaling.yaml").write_text(
        f"prometheus: {{url: '{nobody}', timeoutSeconds: 1}}\n"
        "services:\n"
        "  core-worker:\n"
        f"    target: {{kind: local, url: '{nobody}'}}\n"
        "    minReplicas: 1\n    maxReplicas: 3\n"
        "    metrics: [{name: backlog, query: 'vector(1)', target: {type: AverageValue, averageValue: 10}}]\n")
    with pytest.raises(OperationFailed) as failed:
        job_autoscale(make_settings(database_url=db_url, admin_token="t"), tmp_path)
    assert failed.value.message.startswith("core-worker: could not decide: "), failed.value.message
