"""A minimal OTLP/HTTP metrics receiver for the tests, built on the official OpenTelemetry
protobuf definitions (PyPI `opentelemetry-proto`).

Accepts `POST /v1/metrics` with `Content-Type: application/x-protobuf` (body optionally
gzip-compressed, `Content-Encoding: gzip`), decodes it as
`opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest` and appends one JSON
line per request to `--out`: how it came (content type and encoding, body size), the resource
attributes, the scopes and every metric with its type, flags and data points. A body that does
not decode is logged as a line with an `error` and answered 400.

Usage: otlp_receiver.py --out FILE --ready FILE [--port N] [--status CODE]
  --port 0 (default) binds a free port; the bound port is written to --ready once listening.
  --status CODE answers every well-formed export with CODE instead of 200 (e.g. 500).
Exits 3 with a message on stderr when `opentelemetry-proto` is not installed.
"""

import argparse
import gzip
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
    from opentelemetry.proto.metrics.v1 import metrics_pb2
except ImportError as e:  # pragma: no cover - the test checks the import first
    sys.stderr.write(
        f"otlp_receiver: cannot import the OpenTelemetry protobuf messages ({e}); "
        "scripts/test.sh installs the PyPI package opentelemetry-proto into target/test-venv\n"
    )
    sys.exit(3)

MAX_BODY = 64 << 20
TEMPORALITY = {
    metrics_pb2.AGGREGATION_TEMPORALITY_UNSPECIFIED: "unspecified",
    metrics_pb2.AGGREGATION_TEMPORALITY_DELTA: "delta",
    metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE: "cumulative",
}


def any_value(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return attributes(v.kvlist_value.values)
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind)


def attributes(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


def number_point(p):
    kind = p.WhichOneof("value")
    return {
        "attributes": attributes(p.attributes),
        "start_time_unix_nano": p.start_time_unix_nano,
        "time_unix_nano": p.time_unix_nano,
        "value_type": kind,
        "value": getattr(p, kind) if kind else None,
    }


def histogram_point(p):
    return {
        "attributes": attributes(p.attributes),
        "start_time_unix_nano": p.start_time_unix_nano,
        "time_unix_nano": p.time_unix_nano,
        "count": p.count,
        "sum": p.sum if p.HasField("sum") else None,
        "bucket_counts": list(p.bucket_counts),
        "explicit_bounds": list(p.explicit_bounds),
    }


def metric(m):
    kind = m.WhichOneof("data")
    out = {
        "name": m.name,
        "description": m.description,
        "unit": m.unit,
        "type": kind,
        "is_monotonic": None,
        "temporality": None,
        "points": [],
    }
    if kind == "sum":
        out["is_monotonic"] = m.sum.is_monotonic
        out["temporality"] = TEMPORALITY.get(m.sum.aggregation_temporality, "invalid")
        out["points"] = [number_point(p) for p in m.sum.data_points]
    elif kind == "gauge":
        out["points"] = [number_point(p) for p in m.gauge.data_points]
    elif kind == "histogram":
        out["temporality"] = TEMPORALITY.get(m.histogram.aggregation_temporality, "invalid")
        out["points"] = [histogram_point(p) for p in m.histogram.data_points]
    return out


def decode(req):
    resources = []
    for rm in req.resource_metrics:
        resources.append(
            {
                "attributes": attributes(rm.resource.attributes),
                "scopes": [
                    {
                        "name": sm.scope.name,
                        "version": sm.scope.version,
                        "metrics": [metric(m) for m in sm.metrics],
                    }
                    for sm in rm.scope_metrics
                ],
            }
        )
    return resources


class Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("otlp_receiver: " + (fmt % args) + "\n")

    def answer(self, status, body=b"", content_type="text/plain"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            return self.answer(413, b"body too large\n")
        raw = self.rfile.read(length)
        if self.path != "/v1/metrics":
            return self.answer(404, b"only /v1/metrics\n")
        record = {
            "path": self.path,
            "content_type": self.headers.get("Content-Type"),
            "content_encoding": self.headers.get("Content-Encoding"),
            "body_bytes": len(raw),
            "answered": self.server.status,
        }
        try:
            body = gzip.decompress(raw) if record["content_encoding"] == "gzip" else raw
            req = metrics_service_pb2.ExportMetricsServiceRequest.FromString(body)
            record["decoded_bytes"] = len(body)
            record["resources"] = decode(req)
        except (OSError, EOFError, DecodeError) as e:
            record["answered"] = 400
            record["error"] = f"{type(e).__name__}: {e}"
        if record["content_type"] != "application/x-protobuf":
            record["answered"] = 415
        self.server.write(record)
        if record["answered"] == 200:
            resp = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
            return self.answer(200, resp, "application/x-protobuf")
        return self.answer(record["answered"], f"status {record['answered']}\n".encode())


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr, out, status):
        super().__init__(addr, Receiver)
        self.out = out
        self.status = status
        self.lock = threading.Lock()

    def write(self, record):
        line = json.dumps(record, sort_keys=True) + "\n"
        with self.lock:
            with open(self.out, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--ready", required=True)
    ap.add_argument("--status", type=int, default=200)
    args = ap.parse_args()
    server = Server(("127.0.0.1", args.port), args.out, args.status)
    # Publish the port atomically: the test polls for the file.
    tmp = args.ready + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(str(server.server_address[1]))
    os.replace(tmp, args.ready)
    server.serve_forever()


if __name__ == "__main__":
    main()
