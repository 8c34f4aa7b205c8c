"""Fixtures of the control service's Python suite.

Every test talks to a real `elb-control serve` process with real clients (boto3, awscli, or
hand-signed HTTP). The `server` fixture is parametrized over the two store backends, so the
whole suite runs once against SQLite and once against a PostgreSQL server that this file starts
(as the `postgres` user, in a temporary directory, on a private port) and stops afterwards.
Accounts are created with `elb-control admin`; each test uses fresh accounts, so tests do not
see each other's load balancers.

Control refuses load balancers that no live servo could serve, so every server on a database
prepared with `seed_inventory` gets a `ServoFleet`: two servos per seeded zone, each offering
250 public and 250 private addresses, registered over the servo protocol and heart-beating
twice a second (they never poll a configuration: they stand for capacity). Zones a test adds
itself have no servos unless it starts some.
"""

import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from unittest import mock
import urllib.error
import urllib.request

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.config
import botocore.credentials
import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("ELB_CONTROL_BIN", REPO / "target" / "release" / "elb-control"))
PG_BIN = Path(os.environ.get("ELB_PG_BIN", "/usr/lib/postgresql/15/bin"))
REGION = "us-east-1"
ZONES = ["us-east-1a", "us-east-1b", "us-east-1c"]
# subnet id -> (zone, vpc)
SUBNETS = {
    "subnet-0a1": ("us-east-1a", "vpc-01"),
    "subnet-0b1": ("us-east-1b", "vpc-01"),
    "subnet-0a2": ("us-east-1a", "vpc-02"),
}
# built-in security group id -> VPC (None: for load balancers created with AvailabilityZones)
SECURITY_GROUPS = {
    "sg-0aa": "vpc-01",
    "sg-1": "vpc-01",
    "sg-2": "vpc-01",
    "sg-0c1": None,
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `elb-control serve` process."""

    def __init__(self, db, log_dir, extra_args=(), env=None):
        self.db = db
        self.log_path = Path(log_dir) / f"server-{uuid.uuid4().hex[:8]}.log"
        self.extra_args = list(extra_args)
        self.env = env
        self.proc = None
        self.url = None

    def start(self):
        self.log = open(self.log_path, "ab")
        cmd = [str(BIN), "--db", self.db, "serve", "--listen", "127.0.0.1:0", *self.extra_args]
        if self.db.startswith("postgres") and "--key-file" not in self.extra_args:
            # SQLite defaults to a key file next to the database; PostgreSQL replicas share one.
            cmd += ["--key-file", str(Path(self.log_path).with_name("control-" + self.db.rsplit("/", 1)[-1] + ".key"))]
        env = dict(os.environ, **(self.env or {}))
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, env=env)
        line = _read_line_with_timeout(self.proc, 30)
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line!r}; log: {self.log_path.read_text()[-3000:]}")
        self.url = "http://" + line.split()[-1]
        if self.db in SEEDED:
            ServoFleet.for_db(self.db).follow(self.url)
        return self

    def stop(self, sig=signal.SIGTERM, timeout=15):
        fleet = ServoFleet.fleets.get(self.db)
        if fleet:
            fleet.unfollow(self.url)
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()
        if getattr(self, "log", None):
            self.log.close()
        return self.proc.returncode

    def log_text(self):
        return self.log_path.read_text(errors="replace")


def _read_line_with_timeout(proc, timeout):
    result = {}

    def reader():
        result["line"] = proc.stdout.readline().decode(errors="replace").strip()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(timeout)
    return result.get("line", "")


def run_admin(db, *args, check=True):
    """Runs `elb-control admin ...` and returns its JSON output (or the CompletedProcess)."""
    proc = subprocess.run([str(BIN), "--db", db, "admin", *args], capture_output=True, text=True, timeout=60)
    if not check:
        return proc
    if proc.returncode != 0:
        raise RuntimeError(f"admin {args} failed: {proc.stderr}")
    return json.loads(proc.stdout)


class PostgresServer:
    """A throw-away PostgreSQL cluster owned by the postgres user."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="elb-pg-"))
        self.port = free_port()

    def _as_postgres(self, *cmd, **kw):
        prefix = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]
        return subprocess.run([*prefix, *cmd], check=True, capture_output=True, text=True, timeout=120, **kw)

    def start(self):
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        os.chmod(self.dir, 0o700)
        data = self.dir / "data"
        self._as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200"
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start")
        return self

    def create_database(self):
        name = "elb_" + uuid.uuid4().hex[:10]
        self._as_postgres(str(PG_BIN / "psql"), "-h", str(self.dir), "-p", str(self.port), "-U", "postgres", "-c", f"CREATE DATABASE {name}")
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self):
        try:
            self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def binary():
    if not BIN.exists():
        pytest.exit(f"elb-control binary not found at {BIN}: build it (cargo build --release -p control) or set ELB_CONTROL_BIN", 2)
    return BIN


@pytest.fixture(scope="session")
def postgres(binary):
    if not (PG_BIN / "initdb").exists():
        pytest.fail(f"PostgreSQL 15 binaries not found in {PG_BIN}: apt-get install postgresql (or set ELB_PG_BIN)")
    pg = PostgresServer().start()
    yield pg
    pg.stop()


class Backend:
    def __init__(self, kind, new_db, log_dir):
        self.kind = kind
        self.new_db = new_db
        self.log_dir = log_dir


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def backend(request, binary, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp(f"logs-{request.param}")
    if request.param == "sqlite":
        base = tmp_path_factory.mktemp("sqlite")
        return Backend("sqlite", lambda: f"sqlite:{base / ('db-' + uuid.uuid4().hex[:8] + '.sqlite')}", log_dir)
    pg = request.getfixturevalue("postgres")
    return Backend("postgres", pg.create_database, log_dir)


SEEDED = set()
SEEDED_ZONES = ZONES + ["eu-west-1a"]


def seed_inventory(db):
    for zone in ZONES:
        run_admin(db, "zone", "add", "--name", zone, "--region", REGION)
    run_admin(db, "zone", "add", "--name", "eu-west-1a", "--region", "eu-west-1")
    for subnet, (zone, vpc) in SUBNETS.items():
        run_admin(db, "subnet", "add", "--id", subnet, "--zone", zone, "--vpc", vpc)
    for group, vpc in SECURITY_GROUPS.items():
        run_admin(db, "security-group", "create", "--id", group, "--name", group, *(["--vpc", vpc] if vpc else []))
    SEEDED.add(db)


def servo_call(url, servo_id, secret, path, body):
    """POSTs a servo protocol message; returns (status, document)."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(
        f"{url}/servo/v1/{path}", data=data, method="POST",
        headers={"Authorization": f"Bearer {servo_id}:{secret}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


class ServoFleet:
    """Live servos for the seeded zones of one database (see the module's docstring)."""

    fleets = {}

    @classmethod
    def for_db(cls, db):
        if db not in cls.fleets:
            cls.fleets[db] = cls(db)
        return cls.fleets[db]

    def __init__(self, db):
        self.db = db
        self.urls = []  # servers running on the database, newest last
        self.servos = []  # (id, secret, registration body)
        n = len(ServoFleet.fleets)
        for zi, zone in enumerate(SEEDED_ZONES):
            for k in range(2):
                created = run_admin(db, "servo", "create", "--id", f"fleet-{uuid.uuid4().hex[:8]}", "--zone", zone)
                octet = 100 + (n * 16 + zi * 2 + k) % 150
                body = {
                    "ServoId": created["ServoId"], "Zone": zone,
                    "PublicAddresses": [f"198.18.{octet}.{h}" for h in range(1, 251)],
                    "PrivateAddresses": [f"198.19.{octet}.{h}" for h in range(1, 251)],
                }
                self.servos.append((created["ServoId"], created["Secret"], body))
        self.lock = threading.Lock()
        threading.Thread(target=self._beat, daemon=True).start()

    def follow(self, url):
        """Registers with the server at `url` and heart-beats to it from now on."""
        with self.lock:
            self.urls.append(url)
        for sid, secret, body in self.servos:
            status, doc = servo_call(url, sid, secret, "register", body)
            assert status == 200, doc

    def unfollow(self, url):
        """Stops heart-beating to `url` (the server is stopping); beats go to the server
        started before it, if it still runs."""
        with self.lock:
            if url in self.urls:
                self.urls.remove(url)

    def _beat(self):
        while True:
            time.sleep(0.5)
            with self.lock:
                url = self.urls[-1] if self.urls else None
            if url is None:
                continue
            for sid, secret, body in self.servos:
                try:
                    status, _ = servo_call(url, sid, secret, "heartbeat", {"ServoId": sid})
                    if status == 409:
                        servo_call(url, sid, secret, "register", body)
                except Exception:  # noqa: BLE001 - the server may be restarting
                    pass


class Env:
    """The running service of one backend, and helpers to make accounts and instances."""

    def __init__(self, backend, db, server):
        self.backend = backend
        self.db = db
        self.server = server
        self.url = server.url

    def admin(self, *args, check=True):
        return run_admin(self.db, *args, check=check)

    def account(self, admin=False):
        name = "acct-" + uuid.uuid4().hex[:10]
        args = ["account", "create", "--name", name] + (["--admin"] if admin else [])
        return Account(self, self.admin(*args))

    def instance(self, zone="us-east-1a", account=None):
        iid = "i-" + uuid.uuid4().hex[:12]
        addr = f"198.18.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"
        args = ["instance", "add", "--id", iid, "--address", addr, "--zone", zone]
        if account:
            args += ["--account", account]
        self.admin(*args)
        return iid


def elb_client(url, key_id, secret, region=REGION, validate=True):
    """A boto3 ELB client; `validate=False` lets out-of-range values through to the server."""
    return boto3.client(
        "elb",
        endpoint_url=url,
        region_name=region,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=botocore.config.Config(retries={"total_max_attempts": 1}, parameter_validation=validate),
    )


def iam_client(url, key_id, secret, validate=True):
    """A boto3 IAM client for control's server-certificate actions."""
    return boto3.client(
        "iam",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=botocore.config.Config(retries={"total_max_attempts": 1}, parameter_validation=validate),
    )


def aws_cli(env, acct, service, *args):
    """The unmodified AWS CLI (`aws <service> --endpoint-url <control> ...`) as `acct`."""
    import sys
    exe = Path(sys.executable).parent / "aws"
    if not exe.exists():
        pytest.fail(f"awscli not installed in the test venv ({exe}): pip install -r control/tests-py/requirements.txt")
    environ = dict(
        os.environ,
        AWS_ACCESS_KEY_ID=acct.key_id,
        AWS_SECRET_ACCESS_KEY=acct.secret,
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
    )
    return subprocess.run([str(exe), service, "--endpoint-url", env.url, "--output", "json", *args],
                          capture_output=True, text=True, env=environ, timeout=120)


def make_certificate(common_name, days=30, key_type="ec"):
    """A self-signed certificate and its unencrypted key, PEM, made by openssl."""
    with tempfile.TemporaryDirectory() as tmp:
        key, cert = Path(tmp) / "key.pem", Path(tmp) / "cert.pem"
        newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if key_type == "ec" else ["-newkey", "rsa:2048"]
        subprocess.run(
            ["openssl", "req", "-x509", *newkey, "-nodes", "-keyout", str(key), "-out", str(cert),
             "-subj", f"/CN={common_name}", "-days", str(days), "-addext", f"subjectAltName=DNS:{common_name}"],
            check=True, capture_output=True, timeout=60,
        )
        return cert.read_text(), key.read_text()


class Account:
    def __init__(self, env, created):
        self.env = env
        self.id = created["AccountId"]
        self.name = created["AccountName"]
        self.key_id = created["AccessKeyId"]
        self.secret = created["SecretAccessKey"]
        self.elb = elb_client(env.url, self.key_id, self.secret)
        # Without client-side validation, so that the server's own checks are exercised.
        self.raw = elb_client(env.url, self.key_id, self.secret, validate=False)
        self.iam = iam_client(env.url, self.key_id, self.secret)

    def certificate(self, name=None):
        """Uploads a fresh self-signed certificate; returns its ARN."""
        name = name or "cert-" + uuid.uuid4().hex[:8]
        body, key = make_certificate(f"{name}.example.test")
        meta = self.iam.upload_server_certificate(ServerCertificateName=name, CertificateBody=body, PrivateKey=key)
        return meta["ServerCertificateMetadata"]["Arn"]

    def user(self, name=None, policy=None):
        name = name or "u" + uuid.uuid4().hex[:8]
        created = self.env.admin("user", "create", "--account", self.id, "--name", name)
        if policy is not None:
            self.env.admin("policy", "put", "--account", self.id, "--user", name, "--name", "p1", "--document", json.dumps(policy))
        return elb_client(self.env.url, created["AccessKeyId"], created["SecretAccessKey"])


@pytest.fixture(scope="session")
def env(backend):
    db = backend.new_db()
    seed_inventory(db)
    server = Server(db, backend.log_dir).start()
    yield Env(backend, db, server)
    server.stop()


@pytest.fixture
def acct(env):
    return env.account()


def listener(proto="HTTP", port=80, iport=80, iproto=None, cert=None):
    item = {"Protocol": proto, "LoadBalancerPort": port, "InstancePort": iport}
    if iproto:
        item["InstanceProtocol"] = iproto
    if cert:
        item["SSLCertificateId"] = cert
    return item


def make_lb(client, name=None, zones=("us-east-1a",), listeners=None, **kw):
    name = name or "lb-" + uuid.uuid4().hex[:10]
    args = {"LoadBalancerName": name, "Listeners": listeners or [listener()]}
    if "Subnets" not in kw:
        args["AvailabilityZones"] = list(zones)
    args.update(kw)
    client.create_load_balancer(**args)
    return name


def error_code(excinfo):
    return excinfo.value.response["Error"]["Code"]


def http_status(excinfo):
    return excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"]


def signed_request(url, body, key_id, secret, region=REGION, service="elasticloadbalancing", when=None, method="POST", headers=None):
    """Signs a request with botocore's SigV4 signer (optionally at another time) and sends it.
    Returns (status, body text)."""
    data = body if isinstance(body, bytes) else body.encode()
    req = botocore.awsrequest.AWSRequest(
        method=method,
        url=url + "/",
        data=data,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8", **(headers or {})},
    )
    creds = botocore.credentials.Credentials(key_id, secret)
    signer = botocore.auth.SigV4Auth(creds, service, region)
    if when is None:
        signer.add_auth(req)
    else:
        with mock.patch("botocore.auth.get_current_datetime", return_value=when):
            signer.add_auth(req)
    return send(url + "/", data, dict(req.headers.items()), method)


def send(url, data, headers, method="POST"):
    request = urllib.request.Request(url, data=data if method == "POST" else None, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
