"""Schemathesis against the real server: every check, bounded examples, a valid key.

``schemathesis run`` (its CLI, in a subprocess) drives the real uvicorn server from the OpenAPI
document it serves: its examples, the coverage phase (boundary and missing values, unexpected
methods), and positive and negative fuzzing, with every built-in check: no 5xx, every status,
header and body as documented, schema-valid data accepted and invalid data refused, auth
enforced. The server's own ``core_http_request_duration_seconds`` counts what it answered, so
"no 5xx" is asserted from both sides, every operation that takes input must have been sent at
least ``FUZZ_EXAMPLES`` requests (a run that only reached it proves nothing), and the numbers are
printed (``-s``).

Bounded for the suite: 100 examples per operation (about 1,000 requests, 30 s on 2 busy cores).
``FUZZ_EXAMPLES=500 FUZZ_SEED=<n>`` runs a longer hunt with other inputs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import RunningApi, client_for, project_root
from tests.test_api_http import answered

MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))
TAKES_INPUT = [("POST", "/v1/documents"), ("GET", "/v1/documents"), ("GET", "/v1/documents/{external_id:external_id}"),
               ("GET", "/v1/documents/{external_id:external_id}/content"),
               ("DELETE", "/v1/documents/{external_id:external_id}"), ("POST", "/v1/webhooks/{source}"),
               ("GET", "/v1/jobs/{job_id}"), ("POST", "/v1/search"), ("PUT", "/admin/workers"),
               ("POST", "/v1/emails"), ("GET", "/v1/emails/{message_id:external_id}"),
               ("GET", "/v1/threads/{thread_id}")]
SEED = int(os.environ.get("FUZZ_SEED", "20260601"))


@pytest.fixture
def fuzzed_api(settings: Any, conn: psycopg.Connection[Any], tenant: Any) -> Iterator[RunningApi]:
    # unthrottled: the checks probe without credentials, and a 429 would hide what they look for
    running = RunningApi(settings.model_copy(update={
        "rate_limit_per_second": 1e6, "rate_limit_burst": 10**6,
        "rate_limit_anonymous_per_second": 1e6, "rate_limit_anonymous_burst": 10**6}))
    with client_for(running, tenant.api_key) as client:  # something to read and to delete
        response = client.post("/v1/documents", json={"documents": [
            {"external_id": "doc-1", "text": "alpha beta", "metadata": {"k": "v"}}]})
        assert response.status_code == 202
        # queued, not stored: with anything stored (drained) first, this run sent DELETE /v1/documents
        # a dozen requests instead of 110 (schemathesis 4.32, seed 20260601); stored mail is read in
        # the e-mail tests, and every answer is checked against its model by FastAPI
        mail = client.post("/v1/emails", content=b"Message-ID: <m1@x>\r\nSubject: hi\r\n\r\nalpha\r\n",
                           headers={"Content-Type": "message/rfc822"})
        assert mail.status_code == 202
    yield running
    running.close()


def test_schemathesis_finds_nothing(fuzzed_api: RunningApi, tenant: Any, tmp_path: Path) -> None:
    """Every operation, the admin ones included (with a tenant key they answer 401: checked for shape,
    Allow and auth; their own behaviour is tested in test_bad_input with a real token)."""
    before = answered()
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", str(project_root() / "tests" / "schemathesis.toml"),
         "run", f"{fuzzed_api.url}/openapi.json",
         "--checks", "all", "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--workers", "1",
         "--phases", "examples,coverage,fuzzing", "--header", f"Authorization: Bearer {tenant.api_key}",
         "--no-color"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,  # its cache (.schemathesis/) goes there
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",  # message/rfc822 bodies
             "PYTHONPATH": os.pathsep.join(filter(None, [str(project_root()), os.environ.get("PYTHONPATH")]))})
    counted = answered() - before
    statuses: Counter[str] = Counter()
    operations: Counter[tuple[str, str]] = Counter()
    for (method, route, status), n in counted.items():
        statuses[status] += n
        operations[(method, route)] += n
    print(f"schemathesis sent {sum(statuses.values())} requests: {dict(sorted(statuses.items()))}; "
          f"by operation: {dict(sorted(operations.items()))}")
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
    assert not [s for s in statuses if s.startswith("5")], statuses
    # every operation that takes input was fuzzed in earnest, not just reached
    for operation in TAKES_INPUT:
        assert operations[operation] >= MAX_EXAMPLES, (operation, dict(operations))
