"""Downloads resume a partial file and verify size and md5, against a small HTTP server on localhost."""
import hashlib
import http.server
import re
import threading

import pytest

from milesbook.datasets.download import download
from milesbook.errors import UserError

PAYLOAD = bytes(range(256)) * 4000  # ~1 MB


class RangeHandler(http.server.BaseHTTPRequestHandler):
    ranges = []

    def do_GET(self):  # noqa: N802 (the http.server API)
        start = 0
        if "Range" in self.headers:
            start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0])
            RangeHandler.ranges.append(start)
            self.send_response(206)
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.HTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    RangeHandler.ranges = []
    yield f"http://127.0.0.1:{httpd.server_port}/file.npy"
    httpd.shutdown()


def test_download_resumes_partial_file_and_verifies(tmp_path, server):
    md5 = hashlib.md5(PAYLOAD).hexdigest()
    dest = tmp_path / "file.npy"
    (tmp_path / "file.npy.part").write_bytes(PAYLOAD[:300000])  # left by an interrupted run
    download(server, dest, size=len(PAYLOAD), md5=md5, progress=False)
    assert RangeHandler.ranges == [300000]
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "file.npy.part").exists()
    download(server, dest, size=len(PAYLOAD), md5=md5, progress=False)  # verified: not fetched again
    assert RangeHandler.ranges == [300000]


def test_bad_checksum_removes_the_partial_file(tmp_path, server):
    dest = tmp_path / "file.npy"
    with pytest.raises(UserError, match="^" + re.escape(f"{tmp_path}/file.npy.part fails its md5 check")):
        download(server, dest, size=len(PAYLOAD), md5="0" * 32, progress=False)
    assert not dest.exists() and not (tmp_path / "file.npy.part").exists()


def test_unreachable_source_says_what_to_do(tmp_path):
    with pytest.raises(UserError, match="--from DIR"):
        download("http://127.0.0.1:9/none", tmp_path / "x", progress=False, timeout=2)
