"""One simulated team member for bench/bench_team.py, with nothing but the standard library (it runs
as another OS user, who may not read this checkout's virtualenv).

    python3 team_client.py ROLE SOCKET SECONDS SEED TRUTH.json [tcp HOST PORT USER TOKEN]

Annotators ask for an item, think 0.3-1.5 s, label it with the true label and move on; reviewers
ask for status, metrics and the upcoming items every 2 s. A dropped connection (the server killed)
is re-opened and the request sent again (a decision keeps its message id). Prints one JSON line.
"""

import json
import random
import socket
import sys
import time
import uuid


class Wire:
    def __init__(self, target):
        self.target = target
        self.sock = None
        self.f = None
        self.reconnects = 0
        self.waited = 0.0

    def _connect(self):
        if self.target[0] == "unix":
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(60)
            s.connect(self.target[1])
        else:
            _kind, host, port, user, token = self.target
            s = socket.create_connection((host, int(port)), timeout=60)
        self.sock, self.f = s, s.makefile("rb")
        if "hello" not in json.loads(self.f.readline()):  # the server speaks first
            raise ConnectionResetError()
        if self.target[0] == "tcp":
            self._send_recv("auth", {"user": self.target[3], "token": self.target[4]})

    def _send_recv(self, op, args):
        self.sock.sendall((json.dumps({"id": 1, "op": op, "args": args}) + "\n").encode())
        raw = self.f.readline()
        if not raw:
            raise ConnectionResetError()
        ans = json.loads(raw)
        if not ans["ok"]:
            raise RuntimeError(ans["error"]["code"] + ": " + ans["error"]["message"])
        return ans["data"]

    def call(self, op, **args):
        lost = None
        while True:
            try:
                if self.sock is None:
                    self._connect()
                t = time.perf_counter()
                data = self._send_recv(op, args)
                if lost is not None:
                    self.waited += time.monotonic() - lost
                return data, (time.perf_counter() - t) * 1000
            except (OSError, ConnectionError):
                self.sock = None
                self.reconnects += 1
                lost = lost or time.monotonic()
                if time.monotonic() - lost > 90:
                    raise
                time.sleep(0.1)


def annotate(wire, seconds, rng, truth):
    out = {"acked": [], "latencies": [], "at": [], "waits": 0, "errors": []}
    end = time.monotonic() + seconds
    item = wire.call("next")[0]["item"]
    while time.monotonic() < end:
        if item is None:
            out["waits"] += 1
            time.sleep(0.5)
            item = wire.call("next")[0]["item"]
            continue
        time.sleep(rng.uniform(0.3, 1.5))
        msg = uuid.uuid4().hex
        try:
            ans, ms = wire.call(
                "decide",
                item_id=item["item_id"],
                action="label",
                labels=[truth[item["item_id"]]],
                msg_id=msg,
                lease=item.get("lease"),
            )
        except RuntimeError as exc:  # e.g. not_leased after the server restarted: ask again
            out["errors"].append(str(exc)[:80])
            item = wire.call("next")[0]["item"]
            continue
        out["latencies"].append(round(ms, 2))
        out["at"].append(round(time.time(), 2))
        out["acked"].append(msg)
        item = ans["item"]
    return out


def review(wire, seconds):
    out = {"latencies": {"status": [], "metrics": [], "next_items": []}, "errors": []}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for op, args in (("status", {}), ("metrics", {}), ("next_items", {"n": 20})):
            try:
                out["latencies"][op].append(round(wire.call(op, **args)[1], 2))
            except RuntimeError as exc:
                out["errors"].append(str(exc)[:80])
        time.sleep(2.0)
    return out


def main():
    role, sock, seconds, seed, truth_path = sys.argv[1:6]
    target = ("unix", sock) if len(sys.argv) == 6 else ("tcp", *sys.argv[7:11])
    truth = json.load(open(truth_path))
    wire = Wire(target)
    rng = random.Random(int(seed))
    out = annotate(wire, float(seconds), rng, truth) if role == "annotator" else review(wire, float(seconds))
    out["actor"] = wire.call("ping")[0]["actor"]
    out["reconnects"] = wire.reconnects
    out["waited_s"] = round(wire.waited, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
