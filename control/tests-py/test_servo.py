"""The servo protocol, servo assignment and the DNS server, against a real `elb-control serve`
process on SQLite and on PostgreSQL, with fake servos played by the test.

The server runs with short heartbeat settings (1 s beats, 3 s timeout) and a DNS listener.
Every test makes its own availability zones, so servos of one test are never candidates for
another test's load balancers.
"""

import http.client
import ipaddress
import json
import re
import threading
import time
import uuid

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from botocore.exceptions import ClientError

from conftest import REGION, Server, _read_line_with_timeout, elb_client, error_code, listener, seed_inventory

REGISTERING = {"State": "OutOfService", "ReasonCode": "ELB", "Description": "Instance registration is still in progress."}
IN_SERVICE = {"State": "InService", "ReasonCode": "N/A", "Description": "N/A"}

HEARTBEAT = 1
TIMEOUT = 3
DNS_TTL = 30
DOMAIN = "elb.local"


class ServoEnv:
    def __init__(self, backend, db, server, dns_addr):
        self.backend = backend
        self.db = db
        self.server = server
        self.url = server.url
        self.dns_host, port = dns_addr.rsplit(":", 1)
        self.dns_port = int(port)

    def admin(self, *args, check=True):
        from conftest import run_admin

        return run_admin(self.db, *args, check=check)

    def zones(self, n):
        names = []
        for _ in range(n):
            name = "z" + uuid.uuid4().hex[:8]
            self.admin("zone", "add", "--name", name, "--region", REGION)
            names.append(name)
        return names

    def instance(self, zone, address=None):
        iid = "i-" + uuid.uuid4().hex[:12]
        address = address or f"198.19.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"
        self.admin("instance", "add", "--id", iid, "--address", address, "--zone", zone)
        return iid

    def account(self):
        created = self.admin("account", "create", "--name", "acct-" + uuid.uuid4().hex[:10])
        return created["AccountId"], elb_client(self.url, created["AccessKeyId"], created["SecretAccessKey"])

    def servo(self, zone, public=(), private=(), capacity=None):
        return FakeServo(self, zone, list(public), list(private), capacity)

    def dns(self, name, rdtype="A", tcp=False):
        q = dns.message.make_query(name, rdtype)
        if tcp:
            return dns.query.tcp(q, self.dns_host, port=self.dns_port, timeout=3)
        return dns.query.udp(q, self.dns_host, port=self.dns_port, timeout=3)

    def a_records(self, name, tcp=False):
        """(rcode, addresses in answer order, ttl)"""
        r = self.dns(name, tcp=tcp)
        addrs, ttl = [], None
        for rrset in r.answer:
            if rrset.rdtype == dns.rdatatype.A:
                addrs += [rd.address for rd in rrset]
                ttl = rrset.ttl
        return r.rcode(), addrs, ttl


def start_servo_server(backend, db, extra=()):
    args = [
        "--servo-heartbeat", str(HEARTBEAT), "--servo-timeout", str(TIMEOUT),
        "--dns-listen", "127.0.0.1:0", "--dns-ttl", str(DNS_TTL), *extra,
    ]
    server = Server(db, backend.log_dir, extra_args=args).start()
    line = _read_line_with_timeout(server.proc, 10)
    assert line.startswith("dns listening on "), line
    return server, line.split()[-1]


@pytest.fixture(scope="module")
def senv(backend):
    db = backend.new_db()
    seed_inventory(db)
    server, dns_addr = start_servo_server(backend, db)
    yield ServoEnv(backend, db, server, dns_addr)
    server.stop()


class FakeServo:
    """A servo played by the test: register, heartbeat (optionally in a thread), long-poll,
    report health."""

    def __init__(self, env, zone, public, private, capacity):
        self.env = env
        self.zone = zone
        self.public = public
        self.private = private
        self.capacity = capacity
        created = env.admin("servo", "create", "--id", "s-" + uuid.uuid4().hex[:8], "--zone", zone)
        # With SQLite, control's TLS certificate is generated on first use and pinned here.
        assert {"ServoId", "Zone", "Secret"} <= set(created) <= {"ServoId", "Zone", "Secret", "ControlCertificateSha256"}
        self.id = created["ServoId"]
        self.secret = created["Secret"]
        self._beating = None

    def call(self, method, path, body=None, token=None, timeout=30):
        host = self.env.url.split("//", 1)[1]
        conn = http.client.HTTPConnection(host, timeout=timeout)
        headers = {}
        if token is None:
            token = f"Bearer {self.id}:{self.secret}"
        if token:
            headers["Authorization"] = token
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, "/servo/v1/" + path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            assert resp.getheader("Content-Type") == "application/json", (resp.status, raw)
            return resp.status, json.loads(raw), resp
        finally:
            conn.close()

    def register(self, **override):
        body = {"ServoId": self.id, "Zone": self.zone, "PublicAddresses": self.public, "PrivateAddresses": self.private}
        if self.capacity is not None:
            body["Capacity"] = self.capacity
        body.update(override)
        status, doc, _ = self.call("POST", "register", body)
        assert status == 200, doc
        assert doc == {"HeartbeatInterval": HEARTBEAT}
        return doc

    def heartbeat(self):
        status, doc, _ = self.call("POST", "heartbeat", {"ServoId": self.id})
        assert status == 200, doc
        return doc

    def start(self):
        """Registers and heartbeats every half interval until stop()."""
        self.register()
        stop = threading.Event()

        def beat():
            while not stop.wait(HEARTBEAT / 2):
                try:
                    self.heartbeat()
                except Exception:  # noqa: BLE001 - the server may be stopping
                    pass

        t = threading.Thread(target=beat, daemon=True)
        t.start()
        self._beating = (stop, t)
        return self

    def stop(self):
        if self._beating:
            self._beating[0].set()
            self._beating[1].join(5)
            self._beating = None

    def config(self, since=None, wait=None):
        params = []
        if since is not None:
            params.append(f"since={since}")
        if wait is not None:
            params.append(f"wait={wait}")
        path = "config" + ("?" + "&".join(params) if params else "")
        status, doc, _ = self.call("GET", path, timeout=(wait or 0) + 30)
        assert status == 200, doc
        check_config_document(doc)
        return doc

    def lbs(self):
        return {lb["LoadBalancerName"]: lb for lb in self.config()["LoadBalancers"]}

    def health(self, entries):
        return self.call("POST", "health", {"ServoId": self.id, "Instances": entries})


@pytest.fixture
def servos():
    made = []
    yield made
    for s in made:
        s.stop()


def check_no_nulls(value, path="$"):
    if value is None:
        raise AssertionError(f"null at {path}")
    if isinstance(value, dict):
        for k, v in value.items():
            check_no_nulls(v, f"{path}.{k}")
    if isinstance(value, list):
        for i, v in enumerate(value):
            check_no_nulls(v, f"{path}[{i}]")


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def check_config_document(doc):
    """The exact shape the servo parses with deny_unknown_fields."""
    check_no_nulls(doc)
    assert set(doc) == {"Version", "LoadBalancers", "RequestIds", "HeartbeatInterval"}, doc.keys()
    assert is_int(doc["Version"]) and is_int(doc["HeartbeatInterval"])
    assert all(isinstance(r, str) for r in doc["RequestIds"])
    for lb in doc["LoadBalancers"]:
        required = {"LoadBalancerName", "Vips", "Listeners", "Instances", "HealthCheck", "Attributes"}
        optional = {"Policies", "ListenerPolicies", "BackendServerPolicies", "SecurityGroups"}
        assert required <= set(lb) <= required | optional, lb.keys()
        # Certificate keys travel only over control's TLS listener; this client speaks plain HTTP.
        assert "Certificates" not in lb
        for g in lb.get("SecurityGroups", []):
            assert set(g) == {"GroupId", "Ingress"} and g["GroupId"].startswith("sg-"), g
            for r in g["Ingress"]:
                assert {"IpProtocol", "CidrIp"} <= set(r) <= {"IpProtocol", "FromPort", "ToPort", "CidrIp"}, r
                ipaddress.IPv4Network(r["CidrIp"])
        assert re.fullmatch(r"[A-Za-z0-9-]+-\d{12}", lb["LoadBalancerName"])
        assert len(lb["Vips"]) == 1
        ipaddress.IPv4Address(lb["Vips"][0])
        assert lb["Listeners"]
        for l in lb["Listeners"]:
            base = {"Protocol", "LoadBalancerPort", "InstanceProtocol", "InstancePort"}
            assert set(l) in (base, base | {"SSLCertificateId"}), l
            assert l["Protocol"] in ("HTTP", "HTTPS", "TCP", "SSL")
            assert is_int(l["LoadBalancerPort"]) and is_int(l["InstancePort"])
        for i in lb["Instances"]:
            local = {"InstanceId", "Address", "Zone", "Health"}
            assert set(i) in (local, local | {"HealthCheck"}), i
            ipaddress.IPv4Address(i["Address"])
            if "HealthCheck" in i:
                assert i["HealthCheck"] is False
            assert set(i["Health"]) == {"State", "ReasonCode", "Description"}
            assert i["Health"]["State"] in ("InService", "OutOfService")
            assert i["Health"]["ReasonCode"] in ("ELB", "Instance", "N/A")
        hc = lb["HealthCheck"]
        assert set(hc) == {"Target", "Interval", "Timeout", "UnhealthyThreshold", "HealthyThreshold"}
        assert all(is_int(hc[k]) for k in hc if k != "Target")
        a = lb["Attributes"]
        assert set(a) == {"ConnectionDraining", "ConnectionSettings", "CrossZoneLoadBalancing"}
        assert set(a["ConnectionDraining"]) == {"Enabled", "Timeout"}
        assert set(a["ConnectionSettings"]) == {"IdleTimeout"}
        assert set(a["CrossZoneLoadBalancing"]) == {"Enabled"}
        assert isinstance(a["ConnectionDraining"]["Enabled"], bool)
        assert isinstance(a["CrossZoneLoadBalancing"]["Enabled"], bool)


def wait_for(predicate, timeout=10.0, every=0.1, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def poll_until(servo, since, predicate, timeout=10.0):
    """Long-polls from `since` until `predicate(doc)` holds (unrelated versions, e.g. from
    the assignment task, may wake a poll first). Returns (doc, request ids seen on the way)."""
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("the expected configuration did not arrive")
        doc = servo.config(since=since, wait=max(1, int(left)))
        seen += doc["RequestIds"]
        if predicate(doc):
            return doc, seen
        since = doc["Version"]


class RequestWaiter(threading.Thread):
    """Long-polls from `since` until an answer names the request id given to `expect` (set
    once the API call returned), and notes when that answer arrived. Answers naming other
    requests (an assignment carries the request that called for it) do not count."""

    def __init__(self, servo, since):
        super().__init__(daemon=True)
        self.servo, self.since = servo, since
        self.doc = self.at = None
        self.expected = None
        self.answers = []  # (arrival, doc)
        self.start()

    def expect(self, request_id):
        self.expected = request_id
        self.join(10)

    def _found(self):
        for at, doc in self.answers:
            if self.expected in doc["RequestIds"]:
                self.doc, self.at = doc, at
                return True
        return False

    def run(self):
        since = self.since
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.expected and self._found():
                return
            doc = self.servo.config(since=since, wait=2)
            if doc["Version"] != since:
                self.answers.append((time.monotonic(), doc))
            since = doc["Version"]


def lb_of(doc, name):
    return {lb["LoadBalancerName"]: lb for lb in doc["LoadBalancers"]}.get(name)


def holders(servo_list, lb_name):
    return [s for s in servo_list if lb_name in s.lbs()]


def make_lb(client, zones, listeners=None, name=None, **kw):
    name = name or "lb-" + uuid.uuid4().hex[:10]
    client.create_load_balancer(
        LoadBalancerName=name, Listeners=listeners or [listener()], AvailabilityZones=list(zones), **kw
    )
    return name


# ---------------------------------------------------------------------------------------------


def test_identities_registration_and_auth(senv, servos):
    [zone] = senv.zones(1)
    # Unknown zones and bad ids are refused by the admin command.
    assert senv.admin("servo", "create", "--id", "x1", "--zone", "no-such-zone", check=False).returncode != 0
    assert senv.admin("servo", "create", "--id", "bad:id", "--zone", zone, check=False).returncode != 0
    s = senv.servo(zone, public=["198.18.10.1"], private=["10.10.0.1"], capacity=5)
    servos.append(s)
    assert len(s.secret) == 40 and re.fullmatch(r"[A-Za-z0-9_-]{40}", s.secret)
    assert senv.admin("servo", "create", "--id", s.id, "--zone", zone, check=False).returncode != 0

    body = {"ServoId": s.id, "Zone": zone, "PublicAddresses": ["198.18.10.1"]}
    # Missing, malformed and wrong credentials: 401 with a JSON error.
    for token in ["", "Basic abc", f"Bearer {s.id}", f"Bearer {s.id}:wrong", f"Bearer nobody:{s.secret}"]:
        status, doc, resp = s.call("POST", "register", body, token=token)
        assert status == 401, (token, doc)
        assert set(doc) == {"Error"} and doc["Error"]
        assert resp.getheader("WWW-Authenticate", "").startswith("Bearer")
    status, _, _ = s.call("GET", "config", token=f"Bearer {s.id}:wrong")
    assert status == 401
    # A servo acts only as itself, in its own zone.
    other = senv.servo(zone, public=["198.18.10.2"])
    status, doc, _ = s.call("POST", "register", dict(body, ServoId=other.id))
    assert status == 403 and "Error" in doc
    status, doc, _ = s.call("POST", "heartbeat", {"ServoId": other.id})
    assert status == 403
    [zone2] = senv.zones(1)
    status, doc, _ = s.call("POST", "register", dict(body, Zone=zone2))
    assert status == 403 and zone in doc["Error"]
    # Heartbeats before registering are refused (the servo re-registers).
    status, doc, _ = s.call("POST", "heartbeat", {"ServoId": s.id})
    assert status == 409 and "register" in doc["Error"]
    # Malformed bodies.
    for bad in [
        dict(body, PublicAddresses=["not-an-ip"]),
        dict(body, PublicAddresses=["2001:db8::1"]),
        dict(body, PublicAddresses=[], PrivateAddresses=[]),
        dict(body, Capacity=-1),
    ]:
        status, doc, _ = s.call("POST", "register", bad)
        assert status == 400, (bad, doc)
    status, doc, _ = s.call("POST", "register", None)
    assert status == 400
    # Unknown resources and methods answer in JSON too.
    assert s.call("GET", "nope")[0] == 404
    assert s.call("GET", "register")[0] == 405
    assert s.call("GET", "config?since=abc")[0] == 400

    s.register()
    assert s.heartbeat() == {"HeartbeatInterval": HEARTBEAT}
    # Registering again (a restart) updates the addresses.
    s.register(PublicAddresses=["198.18.10.3"])
    listed = {x["ServoId"]: x for x in senv.admin("servo", "list", "--servo-timeout", str(TIMEOUT))}
    mine = listed[s.id]
    assert mine["Zone"] == zone and mine["PublicAddresses"] == ["198.18.10.3"]
    assert mine["PrivateAddresses"] == ["10.10.0.1"] and mine["Capacity"] == 5
    assert mine["Live"] is True and mine["LastHeartbeat"] and mine["LoadBalancers"] == []
    assert listed[other.id]["Live"] is False and listed[other.id]["LastHeartbeat"] is None

    # A removed servo's credentials stop working.
    assert senv.admin("servo", "remove", "--id", other.id) == {"Removed": other.id}
    assert other.call("POST", "heartbeat", {"ServoId": other.id})[0] == 401
    assert senv.admin("servo", "remove", "--id", other.id, check=False).returncode != 0


def test_assignment_vips_and_config_shape(senv, servos):
    za, zb = senv.zones(2)
    a1 = senv.servo(za, public=["198.18.20.1", "198.18.20.2"], private=["10.20.0.1"]).start()
    a2 = senv.servo(za, public=["198.18.20.3", "198.18.20.4"], private=["10.20.0.2"]).start()
    b1 = senv.servo(zb, public=["198.18.21.1"], private=["10.21.0.1"]).start()
    b2 = senv.servo(zb, public=["198.18.21.2"], private=["10.21.0.2"]).start()
    servos += [a1, a2, b1, b2]
    account, elb = senv.account()
    ia = senv.instance(za)
    ib = senv.instance(zb)
    name = make_lb(elb, [za, zb], listeners=[listener(port=80, iport=8080), listener("TCP", 8443, 443)])
    elb.register_instances_with_load_balancer(LoadBalancerName=name, Instances=[{"InstanceId": ia}, {"InstanceId": ib}])
    lb_name = f"{name}-{account}"

    # Exactly one servo per zone (servos-per-zone is 1) gets it.
    zone_a = wait_for(lambda: holders([a1, a2], lb_name), what="assignment in zone a")
    zone_b = wait_for(lambda: holders([b1, b2], lb_name), what="assignment in zone b")
    time.sleep(1.5)  # several assignment passes: still exactly one per zone
    assert len(holders([a1, a2], lb_name)) == 1 and len(holders([b1, b2], lb_name)) == 1
    sa, sb = zone_a[0], zone_b[0]
    doc_a = sa.config()
    lb_a = {lb["LoadBalancerName"]: lb for lb in doc_a["LoadBalancers"]}[lb_name]
    assert lb_a["Vips"][0] in sa.public
    assert lb_a["Listeners"] == [
        {"Protocol": "HTTP", "LoadBalancerPort": 80, "InstanceProtocol": "HTTP", "InstancePort": 8080},
        {"Protocol": "TCP", "LoadBalancerPort": 8443, "InstanceProtocol": "TCP", "InstancePort": 443},
    ]
    assert lb_a["HealthCheck"] == {"Target": "TCP:8080", "Interval": 30, "Timeout": 5, "UnhealthyThreshold": 2, "HealthyThreshold": 10}
    assert lb_a["Attributes"] == {
        "ConnectionDraining": {"Enabled": False, "Timeout": 300},
        "ConnectionSettings": {"IdleTimeout": 60},
        "CrossZoneLoadBalancing": {"Enabled": False},
    }
    # Each zone's servo checks its own instances (starting from the state control holds) and
    # gets the other zones' with HealthCheck false and their state: the zone rule needs them
    # when its own zone has none in service, and cross-zone load balancing always.
    ia_addr = senv.admin("instance", "list")
    addr = {i["InstanceId"]: i["Address"] for i in ia_addr}
    assert lb_a["Instances"] == [
        {"InstanceId": ia, "Address": addr[ia], "Zone": za, "Health": REGISTERING},
        {"InstanceId": ib, "Address": addr[ib], "Zone": zb, "HealthCheck": False, "Health": REGISTERING},
    ]
    assert sb.lbs()[lb_name]["Instances"] == [
        {"InstanceId": ia, "Address": addr[ia], "Zone": za, "HealthCheck": False, "Health": REGISTERING},
        {"InstanceId": ib, "Address": addr[ib], "Zone": zb, "Health": REGISTERING},
    ]

    # Cross-zone on: the same instances, the attribute tells the servo to use them all.
    version = doc_a["Version"]
    elb.modify_load_balancer_attributes(
        LoadBalancerName=name, LoadBalancerAttributes={"CrossZoneLoadBalancing": {"Enabled": True}}
    )
    doc, _ = poll_until(sa, version, lambda d: lb_of(d, lb_name)["Attributes"]["CrossZoneLoadBalancing"]["Enabled"])
    assert doc["Version"] > version
    lb_a = lb_of(doc, lb_name)
    assert lb_a["Attributes"]["CrossZoneLoadBalancing"] == {"Enabled": True}
    assert lb_a["Instances"] == [
        {"InstanceId": ia, "Address": addr[ia], "Zone": za, "Health": REGISTERING},
        {"InstanceId": ib, "Address": addr[ib], "Zone": zb, "HealthCheck": False, "Health": REGISTERING},
    ]

    # A zone without instances of its own gets the others' too.
    name2 = make_lb(elb, [za, zb])
    ia2 = senv.instance(za)
    elb.register_instances_with_load_balancer(LoadBalancerName=name2, Instances=[{"InstanceId": ia2}])
    lb2 = f"{name2}-{account}"
    [holder_b] = wait_for(lambda: holders([b1, b2], lb2), what="assignment of the second LB")
    addr = {i["InstanceId"]: i["Address"] for i in senv.admin("instance", "list")}
    wait_for(lambda: holder_b.lbs()[lb2]["Instances"], what="instance of the second LB")
    assert holder_b.lbs()[lb2]["Instances"] == [
        {"InstanceId": ia2, "Address": addr[ia2], "Zone": za, "HealthCheck": False, "Health": REGISTERING}
    ]
    # Instances of zones not enabled for the load balancer are never sent.
    elb.disable_availability_zones_for_load_balancer(LoadBalancerName=name, AvailabilityZones=[zb])
    wait_for(lambda: not holders([b1, b2], lb_name), what="zone b unassigned")
    lb_a = wait_for(lambda: [lb for lb in sa.lbs().values() if lb["LoadBalancerName"] == lb_name and len(lb["Instances"]) == 1])
    assert lb_a[0]["Instances"] == [{"InstanceId": ia, "Address": addr[ia], "Zone": za, "Health": REGISTERING}]

    # More load balancers in zone a: least loaded first, and no servo ever serves two load
    # balancers on the same (VIP, port). Zone a has four (VIP, 80) slots: two are taken, two
    # more port-80 load balancers fill them, one on port 81 fits anyway, and a fifth on port
    # 80 fits nowhere: CreateLoadBalancer refuses it, naming the zone and the port, rather than
    # creating a load balancer whose DNS name would answer nothing.
    more = [make_lb(elb, [za]) for _ in range(2)] + [make_lb(elb, [za], listeners=[listener(port=81)])]
    wait_for(lambda: all(holders([a1, a2], f"{m}-{account}") for m in more), what="more assignments")
    with pytest.raises(ClientError) as e:
        make_lb(elb, [za], name="homeless")
    assert error_code(e) == "InvalidConfigurationRequest"
    message = e.value.response["Error"]["Message"]
    assert "LoadBalancerPort 80" in message and za in message, message
    assert "homeless" not in [d["LoadBalancerName"] for d in elb.describe_load_balancers()["LoadBalancerDescriptions"]]
    loads = {}
    for s in (a1, a2):
        endpoints = set()
        lbs = s.lbs()
        loads[s.id] = len(lbs)
        for lb in lbs.values():
            assert lb["Vips"][0] in s.public
            for l in lb["Listeners"]:
                key = (lb["Vips"][0], l["LoadBalancerPort"])
                assert key not in endpoints, f"{key} served twice on {s.id}"
                endpoints.add(key)
    assert abs(loads[a1.id] - loads[a2.id]) <= 1, loads
    # The admin view lists the assignments.
    listed = {x["ServoId"]: x for x in senv.admin("servo", "list", "--servo-timeout", str(TIMEOUT))}
    assert {lb["LoadBalancerName"] for lb in listed[sa.id]["LoadBalancers"]} >= {lb_name}


def test_internal_load_balancer_uses_private_addresses(senv, servos):
    [zone] = senv.zones(1)
    s = senv.servo(zone, public=["198.18.30.1"], private=["10.30.0.1"]).start()
    servos.append(s)
    subnet = "subnet-" + uuid.uuid4().hex[:8]
    senv.admin("subnet", "add", "--id", subnet, "--zone", zone, "--vpc", "vpc-" + uuid.uuid4().hex[:8])
    account, elb = senv.account()
    name = "int-" + uuid.uuid4().hex[:8]
    created = elb.create_load_balancer(
        LoadBalancerName=name, Listeners=[listener()], Subnets=[subnet], Scheme="internal"
    )
    assert created["DNSName"].startswith("internal-")
    lb = wait_for(lambda: s.lbs().get(f"{name}-{account}"), what="internal assignment")
    assert lb["Vips"] == ["10.30.0.1"]
    rcode, addrs, _ = senv.a_records(created["DNSName"])
    assert rcode == dns.rcode.NOERROR and addrs == ["10.30.0.1"]


def test_long_poll(senv, servos):
    [zone] = senv.zones(1)
    s = senv.servo(zone, public=["198.18.40.1"]).start()
    servos.append(s)
    account, elb = senv.account()
    name = make_lb(elb, [zone])
    lb_name = f"{name}-{account}"
    wait_for(lambda: lb_name in s.lbs(), what="assignment")
    version = s.config()["Version"]

    # Behind: at once, even with a long wait.
    t0 = time.monotonic()
    doc = s.config(since=version - 1, wait=30)
    assert time.monotonic() - t0 < 1.0 and doc["Version"] == version
    # Up to date without a wait: at once.
    t0 = time.monotonic()
    assert s.config(since=version)["Version"] == version
    assert time.monotonic() - t0 < 1.0
    # Up to date with a wait and no change: blocks for the wait.
    t0 = time.monotonic()
    doc = s.config(since=version, wait=2)
    elapsed = time.monotonic() - t0
    assert 1.8 <= elapsed < 4, elapsed
    assert doc["Version"] == version and doc["RequestIds"] == []

    # A RegisterInstances call wakes a waiting long-poll in well under a second, and the
    # answer names the call's RequestId.
    iid = senv.instance(zone)
    waiter = RequestWaiter(s, version)
    time.sleep(0.5)
    started = time.monotonic()
    resp = elb.register_instances_with_load_balancer(LoadBalancerName=name, Instances=[{"InstanceId": iid}])
    waiter.expect(resp["ResponseMetadata"]["RequestId"])
    assert waiter.doc, "long-poll did not return"
    latency = waiter.at - started
    assert latency < 1.0, latency
    doc = waiter.doc
    request_id = resp["ResponseMetadata"]["RequestId"]
    assert doc["Version"] > version
    assert request_id in doc["RequestIds"], (request_id, doc["RequestIds"])
    assert [i["InstanceId"] for i in {lb["LoadBalancerName"]: lb for lb in doc["LoadBalancers"]}[lb_name]["Instances"]] == [iid]
    # The served long-poll is logged with the servo, version and request ids.
    log = senv.server.log_text()
    assert re.search(rf"servo={re.escape(s.id)} version={doc['Version']} .*request_ids=\[[^\]]*{request_id}", log), log[-2000:]
    # A later poll from that version explains only newer versions; deregistered instances
    # simply disappear.
    resp = elb.deregister_instances_from_load_balancer(LoadBalancerName=name, Instances=[{"InstanceId": iid}])
    later, seen = poll_until(s, doc["Version"], lambda d: lb_of(d, lb_name)["Instances"] == [])
    assert seen == [resp["ResponseMetadata"]["RequestId"]], seen


def test_two_replicas_wake_each_other(senv, servos):
    if senv.backend.kind != "postgres":
        pytest.skip("several control replicas share PostgreSQL only")
    [zone] = senv.zones(1)
    s = senv.servo(zone, public=["198.18.50.1"]).start()
    servos.append(s)
    account, elb_a = senv.account()
    name = make_lb(elb_a, [zone])
    wait_for(lambda: f"{name}-{account}" in s.lbs(), what="assignment")
    replica_b, _ = start_servo_server(senv.backend, senv.db)
    try:
        created = senv.admin("account", "create", "--name", "acct-" + uuid.uuid4().hex[:10])
        elb_b = elb_client(replica_b.url, created["AccessKeyId"], created["SecretAccessKey"])
        # The change is made through replica B by another account: it does not touch the
        # servo's load balancers, but every config version wakes long-polls.
        latencies = []
        for i in range(5):
            # The servo long-polls replica A (senv.url).
            waiter = RequestWaiter(s, s.config()["Version"])
            time.sleep(0.4)
            started = time.monotonic()
            resp = elb_b.create_load_balancer(
                LoadBalancerName=f"r{i}-{uuid.uuid4().hex[:6]}", Listeners=[listener()], AvailabilityZones=["us-east-1a"]
            )
            waiter.expect(resp["ResponseMetadata"]["RequestId"])
            assert waiter.doc, "long-poll on replica A did not return"
            latencies.append(waiter.at - started)
            assert resp["ResponseMetadata"]["RequestId"] in waiter.doc["RequestIds"]
        assert max(latencies) < 1.0, latencies
        # NOTIFY, not the 1 s poll: nearly all wake-ups are immediate.
        assert sum(1 for l in latencies if l < 0.3) >= 4, latencies
    finally:
        replica_b.stop()


def test_health_reports(senv, servos):
    za, zb, zc = senv.zones(3)
    sa = senv.servo(za, public=["198.18.60.1"]).start()
    sb = senv.servo(zb, public=["198.18.61.1"]).start()
    sc = senv.servo(zc, public=["198.18.62.1"]).start()
    servos += [sa, sb, sc]
    account, elb = senv.account()
    ia, ib = senv.instance(za), senv.instance(zb)
    name = make_lb(elb, [za, zb])
    elb.register_instances_with_load_balancer(LoadBalancerName=name, Instances=[{"InstanceId": ia}, {"InstanceId": ib}])
    elb.modify_load_balancer_attributes(
        LoadBalancerName=name, LoadBalancerAttributes={"CrossZoneLoadBalancing": {"Enabled": True}}
    )
    other = make_lb(elb, [zc])
    lb, lb_other = f"{name}-{account}", f"{other}-{account}"
    wait_for(lambda: lb in sa.lbs() and lb in sb.lbs() and lb_other in sc.lbs(), what="assignments")

    def states():
        got = elb.describe_instance_health(LoadBalancerName=name)["InstanceStates"]
        return {s["InstanceId"]: (s["State"], s["ReasonCode"], s["Description"]) for s in got}

    assert states()[ia] == ("OutOfService", "ELB", "Instance registration is still in progress.")

    version_b = sb.config()["Version"]
    status, doc, _ = sa.health([{"LoadBalancerName": lb, "InstanceId": ia, "State": "InService", "ReasonCode": "N/A", "Description": "N/A"}])
    assert status == 200 and doc == {"Accepted": 1, "Ignored": 0}
    assert states()[ia] == ("InService", "N/A", "N/A")
    # The state change reaches the other zone's servo (cross-zone) through a new version.
    doc_b, _ = poll_until(
        sb, version_b, lambda d: any(i["Health"]["State"] == "InService" for i in lb_of(d, lb)["Instances"])
    )
    inst = {i["InstanceId"]: i for i in lb_of(doc_b, lb)["Instances"]}
    assert inst[ia] == {"InstanceId": ia, "Address": inst[ia]["Address"], "Zone": za, "HealthCheck": False, "Health": IN_SERVICE}
    assert "HealthCheck" not in inst[ib]
    assert re.search(rf"servo {re.escape(sa.id)} reports {ia} of {lb} InService", senv.server.log_text())

    # Another zone's instance in the same report is ignored, the own one stored.
    status, doc, _ = sa.health([
        {"LoadBalancerName": lb, "InstanceId": ia, "State": "OutOfService", "ReasonCode": "Instance", "Description": "Health check failed"},
        {"LoadBalancerName": lb, "InstanceId": ib, "State": "InService", "ReasonCode": "N/A", "Description": "N/A"},
    ])
    assert status == 200 and doc == {"Accepted": 1, "Ignored": 1}
    assert states()[ia] == ("OutOfService", "Instance", "Health check failed")
    assert states()[ib] == ("OutOfService", "ELB", "Instance registration is still in progress.")
    # Reports only about another servo's instance or load balancer: 403, nothing stored.
    status, doc, _ = sa.health([{"LoadBalancerName": lb, "InstanceId": ib, "State": "InService"}])
    assert status == 403 and "Error" in doc
    status, doc, _ = sa.health([{"LoadBalancerName": lb_other, "InstanceId": ia, "State": "InService"}])
    assert status == 403
    status, doc, _ = sb.health([{"LoadBalancerName": lb, "InstanceId": ia, "State": "InService"}])
    assert status == 403
    assert states()[ia][0] == "OutOfService"
    # The zone's own servo may; reason and description default from the state.
    status, doc, _ = sb.health([{"LoadBalancerName": lb, "InstanceId": ib, "State": "InService"}])
    assert status == 200 and doc == {"Accepted": 1, "Ignored": 0}
    assert states()[ib] == ("InService", "N/A", "N/A")
    # Instances no longer registered are ignored; bad states are refused.
    status, doc, _ = sa.health([{"LoadBalancerName": lb, "InstanceId": "i-00000000", "State": "InService"}])
    assert status == 200 and doc == {"Accepted": 0, "Ignored": 1}
    status, doc, _ = sa.health([{"LoadBalancerName": lb, "InstanceId": ia, "State": "Unknown"}])
    assert status == 400
    status, doc, _ = sa.call("POST", "health", {"ServoId": sb.id, "Instances": []})
    assert status == 403


def test_failover_and_dns(senv, servos):
    za, zb = senv.zones(2)
    s1 = senv.servo(za, public=["198.18.70.1"]).start()
    s2 = senv.servo(za, public=["198.18.70.2"]).start()
    s3 = senv.servo(zb, public=["198.18.71.1"]).start()
    servos += [s1, s2, s3]
    account, elb = senv.account()
    name = "Web-" + uuid.uuid4().hex[:8]
    created = elb.create_load_balancer(LoadBalancerName=name, Listeners=[listener()], AvailabilityZones=[za, zb])
    dns_name = created["DNSName"]
    assert dns_name == f"{name.lower()}-{account}.lb.{DOMAIN}"
    lb = f"{name}-{account}"
    [active] = wait_for(lambda: holders([s1, s2], lb), what="assignment in zone a")
    wait_for(lambda: holders([s3], lb), what="assignment in zone b")
    standby = s2 if active is s1 else s1

    # A records: the VIPs of the live assigned servos, TTL as configured, rotated.
    expected = {active.public[0], "198.18.71.1"}
    orders = set()
    for _ in range(6):
        rcode, addrs, ttl = senv.a_records(dns_name)
        assert rcode == dns.rcode.NOERROR
        assert set(addrs) == expected and len(addrs) == 2
        assert ttl == DNS_TTL
        orders.add(tuple(addrs))
    assert len(orders) == 2, orders
    r = senv.dns(dns_name)
    assert r.flags & dns.flags.AA
    # Case-insensitive, and over TCP too.
    rcode, addrs, _ = senv.a_records(dns_name.upper())
    assert rcode == dns.rcode.NOERROR and set(addrs) == expected
    rcode, addrs, ttl = senv.a_records(dns_name, tcp=True)
    assert rcode == dns.rcode.NOERROR and set(addrs) == expected and ttl == DNS_TTL
    # Unknown names under the domain: NXDOMAIN with the SOA; elsewhere: REFUSED.
    r = senv.dns(f"nope-{account}.lb.{DOMAIN}")
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert [rr.rdtype for rr in r.authority] == [dns.rdatatype.SOA]
    r = senv.dns(f"nope.lb.{DOMAIN}", tcp=True)
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert senv.dns("www.example.com").rcode() == dns.rcode.REFUSED
    # Other types of a known name: no data, with the SOA.
    r = senv.dns(dns_name, "AAAA")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer and r.authority

    # Failover: the active servo of zone a stops heart-beating. Within the timeout its load
    # balancer moves to the other live servo of the zone and DNS stops returning it.
    active.stop()
    stopped = time.monotonic()
    wait_for(lambda: lb in standby.lbs(), timeout=TIMEOUT + 3, what="failover")
    moved_after = time.monotonic() - stopped
    assert moved_after < TIMEOUT + 2.5, moved_after
    assert lb not in active.lbs()
    rcode, addrs, _ = senv.a_records(dns_name)
    assert set(addrs) == {standby.public[0], "198.18.71.1"}, addrs
    listed = {x["ServoId"]: x for x in senv.admin("servo", "list", "--servo-timeout", str(TIMEOUT))}
    assert listed[active.id]["Live"] is False and listed[active.id]["LoadBalancers"] == []
    assert [x["LoadBalancerName"] for x in listed[standby.id]["LoadBalancers"]] == [lb]
    assert re.search(rf"assigned {lb} to servo {re.escape(standby.id)} in {za}, VIP {standby.public[0]}", senv.server.log_text())

    # The servo comes back and registers: the assignment stays where it is (stable).
    active.start()
    time.sleep(1.5)
    assert lb in standby.lbs() and lb not in active.lbs()

    # A zone whose only servo dies leaves DNS with the other zone's VIP, then none; the
    # assignment task says the load balancer is short of servos there.
    s3.stop()
    wait_for(lambda: set(senv.a_records(dns_name)[1]) == {standby.public[0]}, timeout=TIMEOUT + 3, what="zone b gone from DNS")
    wait_for(lambda: re.search(rf"{lb} has 0 of 1 servos in {zb}", senv.server.log_text()), what="shortfall warning")
    for s in (s1, s2):
        s.stop()
    wait_for(lambda: senv.a_records(dns_name)[1] == [], timeout=TIMEOUT + 3, what="no live servos")
    r = senv.dns(dns_name)
    assert r.rcode() == dns.rcode.NOERROR and not r.answer


def test_readiness_status_and_refused_changes(senv, servos):
    za, zb = senv.zones(2)
    account, elb = senv.account()

    def zone_status(zone):
        return {z["Zone"]: z for z in senv.admin("status", "--servo-timeout", str(TIMEOUT))["Zones"]}[zone]

    # No servo in zone a: not ready, and nothing can be created there.
    assert zone_status(za)["Ready"] is False and zone_status(za)["LiveServos"] == 0
    with pytest.raises(ClientError) as e:
        make_lb(elb, [za])
    assert error_code(e) == "InvalidConfigurationRequest"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    assert f"no load balancer node (servo) is live in Availability Zone {za}" in e.value.response["Error"]["Message"]

    # One servo with one address: ready; port 80 free on 1 address.
    s = senv.servo(za, public=["198.18.80.1"]).start()
    servos.append(s)
    status = zone_status(za)
    assert status["Ready"] is True and status["LiveServos"] == 1 and status["Public"]["Addresses"] == 1
    name = make_lb(elb, [za])
    wait_for(lambda: f"{name}-{account}" in s.lbs(), what="assignment")
    assert zone_status(za)["Public"]["FreeByPort"]["80"] == 0
    # The address's port 80 is taken: another port-80 load balancer is refused, port 8080 fits.
    with pytest.raises(ClientError) as e:
        make_lb(elb, [za])
    assert error_code(e) == "InvalidConfigurationRequest"
    assert f"LoadBalancerPort 80 is taken on every public address" in e.value.response["Error"]["Message"]
    other = make_lb(elb, [za], listeners=[listener(port=8080)])
    wait_for(lambda: f"{other}-{account}" in s.lbs(), what="second assignment")
    # Adding port 80 to it, or enabling a zone without servos, is refused too; nothing changes.
    with pytest.raises(ClientError) as e:
        elb.create_load_balancer_listeners(LoadBalancerName=other, Listeners=[listener(port=80)])
    assert error_code(e) == "InvalidConfigurationRequest" and "LoadBalancerPort 80" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        elb.enable_availability_zones_for_load_balancer(LoadBalancerName=other, AvailabilityZones=[zb])
    assert error_code(e) == "InvalidConfigurationRequest" and zb in e.value.response["Error"]["Message"]
    d = elb.describe_load_balancers(LoadBalancerNames=[other])["LoadBalancerDescriptions"][0]
    assert d["AvailabilityZones"] == [za] and [l["Listener"]["LoadBalancerPort"] for l in d["ListenerDescriptions"]] == [8080]

    # /health on the API listener: 503 while a zone is not ready, with the same document.
    host = senv.url.split("//", 1)[1]
    conn = http.client.HTTPConnection(host, timeout=10)
    conn.request("GET", "/health")
    resp = conn.getresponse()
    body = json.loads(resp.read())
    conn.close()
    assert resp.status == 503 and body["Ready"] is False
    zones = {z["Zone"]: z for z in body["Zones"]}
    assert zones[za]["Ready"] is True and zones[zb]["Ready"] is False

    # The servo dies: the zone is not ready any more, and its instances say why.
    iid = senv.instance(za)
    elb.register_instances_with_load_balancer(LoadBalancerName=name, Instances=[{"InstanceId": iid}])
    s.health([{"LoadBalancerName": f"{name}-{account}", "InstanceId": iid, "State": "InService"}])
    assert elb.describe_instance_health(LoadBalancerName=name)["InstanceStates"][0]["State"] == "InService"
    s.stop()
    wait_for(lambda: zone_status(za)["LiveServos"] == 0, timeout=TIMEOUT + 3, what="servo dead")
    state = wait_for(
        lambda: [x for x in elb.describe_instance_health(LoadBalancerName=name)["InstanceStates"] if x["State"] == "OutOfService"],
        timeout=TIMEOUT + 3, what="stale InService replaced",
    )[0]
    assert state["ReasonCode"] == "ELB"
    assert f"No load balancer node is running in Availability Zone {za}" in state["Description"], state


def test_refusals_are_shown_and_warm_failover_carries_health(senv, servos):
    [za] = senv.zones(1)
    s1 = senv.servo(za, public=["198.18.90.1"]).start()
    servos.append(s1)
    account, elb = senv.account()
    iid = senv.instance(za)
    name = make_lb(elb, [za])
    lb = f"{name}-{account}"
    wait_for(lambda: lb in s1.lbs(), what="assignment")
    resp = elb.register_instances_with_load_balancer(LoadBalancerName=name, Instances=[{"InstanceId": iid}])
    request_id = resp["ResponseMetadata"]["RequestId"]
    status, doc, _ = s1.call("POST", "refusals", {
        "ServoId": s1.id, "Version": 9, "RequestIds": [request_id],
        "LoadBalancers": [{"LoadBalancerName": lb, "Reason": "LoadBalancerPort 80 on VIP 198.18.90.1 is reserved"}],
    })
    assert status == 200 and doc == {"Accepted": 1, "Ignored": 0}, doc
    # Shown in `admin servo list`, in DescribeInstanceHealth, in the log with the request id.
    listed = {x["ServoId"]: x for x in senv.admin("servo", "list", "--servo-timeout", str(TIMEOUT))}
    assert listed[s1.id]["Refused"] == [
        {"LoadBalancerName": lb, "Reason": "LoadBalancerPort 80 on VIP 198.18.90.1 is reserved", "ServingPrevious": False}
    ]
    state = elb.describe_instance_health(LoadBalancerName=name)["InstanceStates"][0]
    assert state["State"] == "OutOfService" and state["ReasonCode"] == "ELB"
    assert s1.id in state["Description"] and state["Description"].endswith("is reserved"), state
    assert re.search(rf"servo {re.escape(s1.id)} refuses load balancer {lb}.*request_ids=\[\"{request_id}\"\]|request_ids=\[\"{request_id}\"\].*servo {re.escape(s1.id)} refuses load balancer {lb}", senv.server.log_text()), senv.server.log_text()[-3000:]
    # The refusing servo's address leaves DNS.
    dns_name = elb.describe_load_balancers(LoadBalancerNames=[name])["LoadBalancerDescriptions"][0]["DNSName"]
    assert senv.a_records(dns_name)[1] == []
    # Cleared by an empty report; the servo reports the instance healthy.
    status, doc, _ = s1.call("POST", "refusals", {"ServoId": s1.id, "LoadBalancers": []})
    assert status == 200
    assert senv.a_records(dns_name)[1] == ["198.18.90.1"]
    s1.health([{"LoadBalancerName": lb, "InstanceId": iid, "State": "InService"}])
    assert elb.describe_instance_health(LoadBalancerName=name)["InstanceStates"][0]["State"] == "InService"

    # Warm failover: a second servo of the zone takes over and is told the instance is in
    # service, to start from (it checks it as usual).
    s2 = senv.servo(za, public=["198.18.90.2"]).start()
    servos.append(s2)
    s1.stop()
    taken = wait_for(lambda: s2.lbs().get(lb), timeout=TIMEOUT + 3, what="take-over")
    assert taken["Instances"] == [{"InstanceId": iid, "Address": taken["Instances"][0]["Address"], "Zone": za, "Health": IN_SERVICE}]
    assert elb.describe_instance_health(LoadBalancerName=name)["InstanceStates"][0]["State"] == "InService"
