"""A real S3 endpoint for tests: moto's HTTP server on 127.0.0.1 (no network, no mock of our code).

Credentials go through the environment, as in production (delta-rs and pyarrow.fs both
read ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``); only non-secret options
(endpoint, region, plain HTTP) are passed explicitly.
"""

from __future__ import annotations

import socket
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

SECRET = "lfm4ads-test-secret-do-not-log"


@dataclass
class S3:
    endpoint: str
    options: dict

    def bucket(self, name: str) -> str:
        """Create bucket ``name``; returns ``s3://name``."""
        from pyarrow import fs

        create = fs.S3FileSystem(
            endpoint_override=self.endpoint.split("://")[1],
            scheme="http",
            region="us-east-1",
            allow_bucket_creation=True,
        )
        create.create_dir(name)
        return f"s3://{name}"

    @contextmanager
    def registered(self, name: str, cache):
        """Bucket ``name`` registered with this endpoint's options for the duration."""
        from engines import storage

        uri = self.bucket(name)
        storage.register(uri, self.options, cache)
        try:
            yield uri
        finally:
            storage.unregister(uri)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_s3():
    """(S3, stop) with ``moto_server`` on a free loopback port, in its own process: some
    delta-rs calls block without releasing the GIL, which would starve an in-process
    (threaded) server."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    port = _free_port()
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"moto_server did not start on port {port}") from None
            time.sleep(0.1)
    endpoint = f"http://127.0.0.1:{port}"
    options = {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}

    def stop():
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()

    return S3(endpoint, options), stop


@pytest.fixture(scope="module")
def s3():
    mp = pytest.MonkeyPatch()
    mp.setenv("AWS_ACCESS_KEY_ID", "testing")
    mp.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    mp.delenv("AWS_PROFILE", raising=False)
    mp.delenv("AWS_SESSION_TOKEN", raising=False)
    server, stop = start_s3()
    yield server
    stop()
    mp.undo()
