"""A real S3-API server for tests (``bench.s3server.MotoServer``: moto_server in its own process),
and a fault-injecting proxy in front of it. The AWS_* variables are fake but set, in the test
process only, so obstore signs requests the way it would against AWS."""

from __future__ import annotations

from bench.s3server import FAKE_AWS, MotoServer, make_bucket

__all__ = ["FAKE_AWS", "FullStoreProxy", "MotoServer", "make_bucket"]


class FullStoreProxy:
    """An honest stand-in for a full store: an HTTP proxy in front of the S3 server that passes
    requests through until ``budget`` bytes of upload bodies have gone by, then answers every upload
    the way S3 answers one it will not take (400 ``EntityTooLarge``; MinIO says ``XMinioStorageFull``
    with 507 when its disks fill). Reads, HEADs and listings keep passing."""

    def __init__(self, upstream: str, budget: int) -> None:
        import http.client
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        target = urlsplit(upstream)
        state = {"sent": 0}
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: object) -> None:
                return None

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.command in ("PUT", "POST") and length:
                    with lock:
                        state["sent"] += length
                        full = state["sent"] > budget
                    if full:
                        error = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>EntityTooLarge</Code>'
                                 b"<Message>Your proposed upload exceeds the maximum allowed size</Message></Error>")
                        self.send_response(400)
                        self.send_header("Content-Type", "application/xml")
                        self.send_header("Content-Length", str(len(error)))
                        self.end_headers()
                        self.wfile.write(error)
                        return
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                head = self.command == "HEAD"  # a HEAD's Content-Length is the object's size: passed on
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection") and (head or k.lower() != "content-length"):
                        self.send_header(k, v)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _relay

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
