#!/usr/bin/env python3
"""Durability check: enrolls N templates concurrently while the server is killed with SIGKILL
and restarted; afterwards every enroll that got a 201 must be present.

usage: durability.py DVSP_BIN MODEL_DIR [N] [DB_URL]
Prints counts: enrolls, 201s (before the kill), failed attempts (retried by the client until the
restarted server answers), templates present, acknowledged-but-missing (must be 0).
"""
import json, os, signal, socket, subprocess, sys, tempfile, threading, time, urllib.error, urllib.request

binary, model = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
work = tempfile.mkdtemp(prefix="dvsp-durability-")
db = sys.argv[4] if len(sys.argv) > 4 else f"sqlite://{work}/dvsp.db"
digits = os.path.join(work, "digits")
subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "digits.py"), digits, "5"], check=True)
pngs = [open(os.path.join(digits, f), "rb").read() for f in sorted(os.listdir(digits))]

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

port = free_port()
base = f"http://127.0.0.1:{port}"
subprocess.run([binary, "db", "migrate", "--db", db], check=True, capture_output=True)
key = subprocess.run([binary, "keys", "create", "--role", "admin", "--db", db], check=True, capture_output=True, text=True).stdout.strip()

def start():
    p = subprocess.Popen([binary, "serve", "--model", model, "--db", db, "--bind", f"127.0.0.1:{port}", "--fmr", "1e-2"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            urllib.request.urlopen(base + "/readyz", timeout=1); return p
        except Exception:
            time.sleep(0.05)
    raise SystemExit("server did not become ready")

def call(method, path, body=None, ctype=None):
    req = urllib.request.Request(base + path, data=body, method=method, headers={"Authorization": "Bearer " + key})
    if ctype: req.add_header("content-type", ctype)
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, json.loads(r.read() or b"null")

server = start()
call("POST", "/v1/subjects", json.dumps({"id": "durable"}).encode(), "application/json")
ok, failed, lock, counter = [], [], threading.Lock(), iter(range(n))
killed = threading.Event()

def worker():
    while True:
        with lock:
            i = next(counter, None)
        if i is None: return
        for _ in range(200):  # a client retries while the server is down
            try:
                st, body = call("POST", "/v1/subjects/durable/templates", pngs[i % len(pngs)], "image/png")
                with lock: ok.append((body["template_id"], killed.is_set()))
                break
            except Exception:
                with lock: failed.append(i)
                time.sleep(0.05)

threads = [threading.Thread(target=worker) for _ in range(32)]
for t in threads: t.start()
while len(ok) < n // 3: time.sleep(0.005)
server.send_signal(signal.SIGKILL); server.wait(); killed.set()
before = len(ok)
server = start()
for t in threads: t.join()
st, subject = call("GET", "/v1/subjects/durable")
present = {t["id"] for t in subject["templates"]}
acked = {t for t, _ in ok}
missing = acked - present
server.send_signal(signal.SIGTERM); server.wait()
print(json.dumps({"enrolls": n, "acked_201": len(acked), "acked_before_kill": before, "failed_attempts_retried": len(failed),
                  "present_after_restart": len(present), "acked_but_missing": len(missing),
                  "present_but_not_acked": len(present - acked), "db": db.split("@")[-1]}))
sys.exit(1 if missing else 0)
