#!/usr/bin/env python3
"""A tiny webhook receiver for `WEBHOOKS=1` bench runs (bench/lib.sh): verifies each POST's
signature like the reference receiver of docs/operations.md, counts the events (unique event IDs
and refusals) and answers 204. Standard library only.

usage: hook_receiver.py SECRET_FILE PORT_FILE COUNT_FILE
Listens on 127.0.0.1, a free port written to PORT_FILE; at SIGTERM writes
"events=<unique> posts=<all> refused=<n>" to COUNT_FILE.
"""
import hashlib
import hmac
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = open(sys.argv[1], "rb").readline().strip()
lock = threading.Lock()
seen = set()
counts = {"posts": 0, "refused": 0}


class Hook(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        ts = self.headers.get("Pep-Timestamp", "")
        mac = hmac.new(SECRET, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        fresh = ts.isdigit() and abs(time.time() - int(ts)) <= 300
        ok = fresh and hmac.compare_digest("v1=" + mac, self.headers.get("Pep-Signature", ""))
        with lock:
            counts["posts"] += 1
            if ok:
                seen.add(self.headers.get("Pep-Event-Id", ""))
            else:
                counts["refused"] += 1
        self.send_response(204 if ok else 401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
server.daemon_threads = True
with open(sys.argv[2], "w") as f:
    f.write(str(server.server_address[1]))


def stop(*_):
    with lock, open(sys.argv[3], "w") as f:
        f.write(f"events={len(seen)} posts={counts['posts']} refused={counts['refused']}\n")
    threading.Thread(target=server.shutdown).start()


signal.signal(signal.SIGTERM, stop)
server.serve_forever()
