"""A real S3-API server for tests: moto's server mode (``moto_server``) in its own process.

``MotoServer`` starts it on a free port and waits for its "Running on" line (an event, not a
sleep); ``make_bucket`` creates a bucket through boto3 (moto's own dependency; opsctl itself
talks to the store through obstore only). The AWS_* variables are fake but set, in the test
process only, so obstore signs requests the way it would against AWS.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1"}
_buckets = itertools.count()


class MotoServer:
    def __init__(self) -> None:
        self.log = Path(tempfile.mkstemp(prefix="opsctl-moto-", suffix=".log")[1])
        exe = Path(sys.executable).with_name("moto_server")
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", "0"], stdout=out, stderr=out,
                                         stdin=subprocess.DEVNULL, env={**os.environ, **FAKE_AWS})
        deadline = time.monotonic() + 120  # a bound on a hung start, not a margin the test depends on
        while True:
            match = re.search(r"Running on http://127\.0\.0\.1:(\d+)", self.log.read_text(errors="replace"))
            if match:
                self.port = int(match[1])
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto_server did not start: {self.log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.unlink(missing_ok=True)


def make_bucket(endpoint: str, name: str | None = None) -> str:
    import boto3

    bucket = name or f"opsctl-test-{os.getpid()}-{next(_buckets)}"
    boto3.client("s3", endpoint_url=endpoint, **{"region_name": FAKE_AWS["AWS_REGION"]}).create_bucket(Bucket=bucket)
    return bucket
