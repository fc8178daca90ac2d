"""What the benchmarks share: the release binary, generated events, and
`pipeline local` on a fresh environment of its own."""
import json, os, re, shutil, subprocess, time, urllib.request, uuid

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
database_url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
target = os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target"))
pipeline = os.path.join(target, "release", "pipeline")
COLUMNS = "event_id, occurred_at, source, kind, user_id, amount, payload"


def build(*extra):
    """The release build of `pipeline` (and the examples named)."""
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "pipeline-cli", "--bin", "pipeline", *extra],
                   cwd=root, check=True)


def peak_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def psql(database, *args):
    base = database_url.rsplit("/", 1)[0] + "/" + database
    return subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", base, *args],
                          check=True, capture_output=True, text=True).stdout


def environments(work):
    """A folder of environments holding the shipped base and dev specs."""
    envs = os.path.join(work, "environments")
    os.makedirs(envs, exist_ok=True)
    for name in ("base.yaml", "dev.yaml"):
        shutil.copy(os.path.join(root, "environments", name), os.path.join(envs, name))
    return envs


def generate(work, rows, csv=True):
    """`rows` events (random keys, spread over 28 days, 16 kinds, 10 rows
    per user id) as NDJSON, and as CSV for `\\copy` when asked."""
    ndjson = os.path.join(work, f"batch-{rows}.ndjson")
    csv_path = os.path.join(work, f"batch-{rows}.csv") if csv else os.devnull
    with open(ndjson, "w") as nd, open(csv_path, "w") as cs:
        nd_buf, cs_buf = [], []
        for n in range(1, rows + 1):
            event_id = uuid.UUID(int=n * 2654435761 % (1 << 122) | (4 << 76) | (2 << 62))
            at = "2024-01-%02dT%02d:%02d:%02dZ" % (1 + n % 28, n % 24, n % 60, (n * 7) % 60)
            kind, user, amount = "k%d" % (n % 16), (n * 7919) % (rows // 10 or 1), "%d.%02d" % (n % 1000, n % 100)
            payload = '{"page":"/p/%d","ref":"r%d","n":%d}' % (n % 977, n % 31, n)
            nd_buf.append('{"event_id":"%s","occurred_at":"%s","source":"web","kind":"%s","user_id":%d,'
                          '"amount":"%s","payload":%s}\n' % (event_id, at, kind, user, amount, payload))
            if csv:
                cs_buf.append('%s,%s,web,%s,%d,%s,"%s"\n' % (event_id, at, kind, user, amount, payload.replace('"', '""')))
            if len(nd_buf) >= 10000:
                nd.write("".join(nd_buf)); cs.write("".join(cs_buf)); nd_buf, cs_buf = [], []
        nd.write("".join(nd_buf)); cs.write("".join(cs_buf))
    return ndjson, (csv_path if csv else None)


class Local:
    """`pipeline local` on a fresh environment (its own database), which
    can be killed and started again on the same data."""

    def __init__(self, work, envs, extra, log_filter="warn,pipeline_shared=info,loader=info"):
        self.env = "bench" + uuid.uuid4().hex[:6]
        with open(os.path.join(envs, self.env + ".yaml"), "w") as f:
            f.write("extends: dev\n")
        self.work, self.envs, self.extra, self.log_filter = work, envs, extra, log_filter
        self.log = os.path.join(work, self.env + ".log")
        self.database = "pipeline_" + self.env
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            [pipeline, "--environments", self.envs, "--output", "json", "local", "--env", self.env, "--port", "0",
             "--data-dir", os.path.join(self.work, self.env)] + self.extra,
            stdout=subprocess.PIPE, stderr=open(self.log, "a"), text=True,
            env=dict(os.environ, RUST_LOG=self.log_filter))
        banner = json.loads(self.proc.stdout.readline())
        self.url, self.key = banner["url"], banner["api_key"]

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def client(self, *args):
        return [pipeline, "--environments", self.envs, "--output", "json", *args, "--env", self.env,
                "--url", self.url, "--api-key", self.key]

    def push(self, batch, rows):
        start = time.perf_counter()
        out = subprocess.run(self.client("push") + ["-d", "events", batch, "--wait", "--timeout", "3600"],
                             capture_output=True, text=True)
        secs = time.perf_counter() - start
        result = json.loads(out.stdout)
        assert result["status"] == "loaded" and result["batch"]["inserted"] == rows, out.stdout + out.stderr
        return secs, result

    def get(self, path):
        request = urllib.request.Request(self.url + path, headers={"x-api-key": self.key})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def lines(self, pattern):
        """The fields of each log line that matches `pattern`."""
        found = []
        with open(self.log) as f:
            for line in f:
                m = re.search(pattern, line)
                if m:
                    fields = dict(re.findall(r"(\w+)=(\d+)\b", line))
                    found.append((m.group(0), {k: int(v) for k, v in fields.items()}))
        return found

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(2)
            self.proc.wait()
        subprocess.run(["psql", "-X", "-q", database_url, "-c",
                        f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)"],
                       check=False, capture_output=True)
