"""The README's Quickstart, run as a newcomer runs it: `opsctl up` from the repository's root with the
shipped policies, then every command of the Quickstart, as written, in a second terminal.

The commands are read from the README itself, so the docs cannot drift from what works: a new line
in the Quickstart is run here too, and a line this test does not know how to run fails it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from core.embedded import prometheus_binary
from tests.cli_citations import Citation, citations_in_markdown, problems, root_command
from tests.conftest import free_port, outside_pytest_tmp, project_root
from tests.test_ingest_cli import table
from tests.test_up import prom_query, ready
from tests.waiting import wait_for

ROOT = project_root()
_FENCE = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)


def quickstart_lines() -> list[str]:
    """The shell lines of the README's Quickstart section, comments stripped, in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Quickstart\n", 1)[1].split("\n## ", 1)[0]
    lines = []
    for block in _FENCE.findall(section):
        for raw in block.splitlines():
            words = shlex.split(raw, comments=True)
            if words:
                lines.append(shlex.join(words))
    return lines


def commands(line: str) -> list[list[str]]:
    """A line's commands, split at ``&&`` (run in order, each only if the one before succeeded)."""
    found: list[list[str]] = [[]]
    for word in shlex.split(line):
        if word == "&&":
            found.append([])
        else:
            found[-1].append(word)
    return found


def test_quickstart_commands_parse_and_name_files_that_exist() -> None:
    """Without a server: every `opsctl` line parses with the real CLI, and the files it names exist."""
    root = root_command()
    cited = [Citation("README.md", line, tuple(argv[1:]))
             for line in quickstart_lines() for argv in commands(line) if argv[0] == "opsctl"]
    assert {c.argv[0] for c in cited} >= {"tenant", "ingest", "search", "status", "scale", "backup"}
    assert [p for c in cited for p in problems(c, root)] == []
    for citation in cited:
        if citation.argv[0] == "ingest":
            paths = [w for w in citation.argv[1:] if not w.startswith("-")]
            assert paths and all((ROOT / p).exists() for p in paths), f"{citation.line}: a path does not exist"


def test_every_opsctl_line_of_the_readme_parses() -> None:
    """Beyond the Quickstart: every `opsctl …` the README cites names a real command and options."""
    root = root_command()
    cited = citations_in_markdown((ROOT / "README.md").read_text(encoding="utf-8"), "README.md")
    assert len(cited) > 10
    commands_only = [c for c in cited if not all(word.startswith("-") for word in c.argv)]  # `opsctl --help`
    assert [p for c in commands_only for p in problems(c, root)] == []


def opsctl(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "opsctl.cli", *argv], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.serial  # the whole system, every server and worker of `opsctl up`: alone, not next to other workers
def test_quickstart_runs_against_opsctl_up_with_the_shipped_policies(tmp_path: Path) -> None:
    assert prometheus_binary(), "Prometheus must be installed (make test installs it): this test never skips"
    data_dir = outside_pytest_tmp("opsctl-test-quickstart-") / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSCTL_")}
    env.update(OPSCTL_DATA_DIR=str(data_dir), PYTHONPATH=str(ROOT), COLUMNS="200")
    port, prom_port = free_port(), free_port()
    log = tmp_path / "up.log"
    with log.open("ab") as out:  # `make up` is `opsctl up` in the repository's root (./policies)
        proc = subprocess.Popen([sys.executable, "-m", "opsctl.cli", "up", "--port", str(port),
                                 "--prometheus-port", str(prom_port)], env=env, cwd=ROOT, stdout=out, stderr=out)
    ran: list[tuple[str, subprocess.CompletedProcess[str]]] = []
    try:
        wait_for(lambda: ready(f"http://127.0.0.1:{port}"), 90, "the API")
        prom = f"http://127.0.0.1:{prom_port}"
        wait_for(lambda: prom_query(prom, "max(core_ingest_queue_depth) + max(core_ingest_queue_in_flight)"), 60,
                 "Prometheus to scrape the queue gauges")
        user_env = dict(env)
        for line in quickstart_lines():
            for argv in commands(line):
                if argv[0] == "make" or argv[:2] == [".", ".venv/bin/activate"]:
                    continue  # `make up` is the `opsctl up` above; this interpreter is the venv's
                if argv[0] == "export":
                    name, _, _ = argv[1].partition("=")
                    assert name == "OPSCTL_API_KEY", f"the Quickstart exports {name}: teach this test"
                    tenant = json.loads(ran[-1][1].stdout)
                    user_env[name] = tenant["api_key"]
                    continue
                assert argv[0] == "opsctl", f"{line}: teach this test to run it"
                done = opsctl(argv[1:], user_env)
                ran.append((shlex.join(argv), done))
                if done.returncode != 0:
                    break  # `a && b`: b runs only if a succeeded
        failed = [f"`{cmd}` exited {out.returncode}: {out.stderr.strip()[-1000:]}" for cmd, out in ran
                  if out.returncode]
        assert not failed, "\n".join(failed)
        opsctl_lines = [argv for line in quickstart_lines() for argv in commands(line) if argv[0] == "opsctl"]
        assert [cmd for cmd, _ in ran] == [shlex.join(argv) for argv in opsctl_lines]

        (header, row) = table(next(out for cmd, out in ran if cmd.startswith("opsctl ingest")).stdout)
        ingested = dict(zip(header, row, strict=True))
        assert int(ingested["DOCUMENTS"]) > 5 and ingested["DONE"] == ingested["JOBS"], ingested
        assert (ingested["DEAD"], ingested["PENDING"]) == ("0", "0"), ingested
        assert "refund" in next(out for cmd, out in ran if cmd.startswith("opsctl search")).stdout.lower()
        # the sample mailbox: every message stored and threaded, the refund thread drawn with its missing message
        (header, row) = table(next(out for cmd, out in ran if cmd.startswith("opsctl ingest examples/mail")).stdout)
        mailed = dict(zip(header, row, strict=True))
        assert (mailed["MESSAGES"], mailed["REFUSED"], mailed["DONE"], mailed["PENDING"]) == ("8", "0", "8", "0")
        email = json.loads(opsctl(["emails", "show", "<billing-1@acme.example>", "-o", "json"], user_env).stdout)
        grouped = json.loads(opsctl(["search", "refund", "--group-by", "thread", "-o", "json"], user_env).stdout)
        assert [h["matched_messages"] > 0 for h in grouped["results"] if h.get("thread_id") == email["thread_id"]] \
            == [True], grouped
        thread = json.loads(opsctl(["threads", "show", str(email["thread_id"]), "-o", "json"], user_env).stdout)
        assert thread["message_count"] == 6 and [m["message_id"] for m in thread["messages"] if m["ghost"]] == [
            "escalation-1@acme.example"]

        # every service of the shipped autoscaling policy is decided from its metrics, without an error
        decided = json.loads(opsctl(["scale", "-o", "json"], user_env).stdout)
        assert decided and all(d["error"] is None for d in decided), decided
        assert all(m.get("error") is None for d in decided for m in d["metrics"]), decided
        # and the daemon's own autoscale job, the one that runs every 30 s, succeeds
        job = opsctl(["daemon", "--once", "autoscale", "-o", "json"], user_env)
        assert job.returncode == 0 and json.loads(job.stdout)["outcome"] == "ok", job.stdout + job.stderr
        # the slow-query job sets the shipped threshold on the embedded server, whose log it can read
        job = opsctl(["daemon", "--once", "slow-queries", "-o", "json"], user_env)
        assert job.returncode == 0 and json.loads(job.stdout)["outcome"] == "ok", job.stdout + job.stderr
        assert "; but " not in json.loads(job.stdout)["sentence"], job.stdout  # the log is readable
        status = json.loads(opsctl(["status", "-o", "json"], user_env).stdout)
        assert not [a for a in status["attention"] if "failed" in a], status["attention"]
        assert "restore drill" not in " ".join(status["attention"]), "the Quickstart's drill ran and passed"
        assert status["cache_hit_rate"]["source"] == "prometheus", status["cache_hit_rate"]
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(120)
    assert code == 0, log.read_text()[-2000:]
