"""Fixtures: a scriptable stdlib HTTP server, and the real moe-metricsd binary.

The real daemon is found through MOE_METRICSD_BIN (scripts/test-adopt sets it after building),
else in the package's usual build folders. A test that needs it fails, never skips, when it
cannot be found or started: a green run must mean the client talked to the real daemon.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

CLIENT_ROOT = Path(__file__).resolve().parents[1]
REPO_ROOT = CLIENT_ROOT.parents[1]
sys.path.insert(0, str(CLIENT_ROOT))


class Recorded:
    def __init__(self, method: str, path: str, headers: Dict[str, str], body: bytes) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body

    def decisions(self) -> List[Dict[str, Any]]:
        text = self.body.decode()
        if self.headers.get("content-type", "").startswith("application/x-ndjson"):
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        value = json.loads(text)
        return value if isinstance(value, list) else [value]


class StubServer:
    """Records every request; answers with `responder(request) -> (status, body)` (202 default)."""

    def __init__(self) -> None:
        self.requests: List[Recorded] = []
        self.close_silently = False
        self.lock = threading.Lock()
        self.responder: Callable[[Recorded], Tuple[int, str]] = lambda r: (202, '{"accepted": %d}' % len(r.decisions()))
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                rec = Recorded("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with stub.lock:
                    stub.requests.append(rec)
                status, text = stub.responder(rec)
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                if stub.close_silently:
                    # Close after answering without a `Connection: close` header, as a server
                    # whose idle timeout just expired would.
                    self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def all_decisions(self) -> List[Dict[str, Any]]:
        with self.lock:
            return [d for r in self.requests for d in r.decisions()]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium for one test, driven over DevTools (see devtools.py)."""
    from devtools import DevTools  # imported here: it needs Chromium only when a test asks for it

    tools = DevTools(str(tmp_path / "profile"))
    yield tools
    tools.close()


@pytest.fixture
def stub() -> Any:
    server = StubServer()
    yield server
    server.close()


def daemon_binary() -> Path:
    candidates = []
    if os.environ.get("MOE_METRICSD_BIN"):
        candidates.append(Path(os.environ["MOE_METRICSD_BIN"]))
    for scratch in (".build-adopt", ".build"):
        for config in ("debug", "release"):
            candidates.append(REPO_ROOT / scratch / config / "moe-metricsd")
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    pytest.fail("moe-metricsd binary not found (tried: %s); build it with "
                "`swift build --product moe-metricsd` or set MOE_METRICSD_BIN"
                % ", ".join(str(c) for c in candidates))


# The daemon logs the address it bound to; with --listen 127.0.0.1:0 that is how we learn the port.
_LISTEN_RE = re.compile(r"listening on (?:127\.0\.0\.1|localhost):(\d{1,5})")


class Daemon:
    def __init__(self, binary: Path, extra_args: Optional[List[str]] = None) -> None:
        self.process = subprocess.Popen(
            [str(binary), "--listen", "127.0.0.1:0", *(extra_args or [])],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.log: List[str] = []
        self.port: Optional[int] = None
        found = threading.Event()

        def pump() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                self.log.append(line)
                if self.port is None:
                    match = _LISTEN_RE.search(line)
                    if match and int(match.group(1)) != 0:
                        self.port = int(match.group(1))
                        found.set()
            found.set()

        threading.Thread(target=pump, daemon=True).start()
        if not found.wait(30) or self.port is None:
            self.stop()
            pytest.fail("moe-metricsd did not report its listening port; log:\n" + "".join(self.log))
        self.url = f"http://127.0.0.1:{self.port}"
        # Readiness: /readyz answers 200 once the daemon accepts decisions.
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                pytest.fail("moe-metricsd never became ready; log:\n" + "".join(self.log))
            time.sleep(0.05)

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as response:
            return json.loads(response.read())

    def post(self, path: str, body: bytes, content_type: str = "application/json") -> Tuple[int, str]:
        request = urllib.request.Request(self.url + path, data=body, method="POST",
                                         headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture(scope="module")
def daemon() -> Any:
    process = Daemon(daemon_binary())
    yield process
    process.stop()
