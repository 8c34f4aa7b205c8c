"""The EC2-compatible inventory: with --ec2-endpoint, zones and instance ids are resolved by
signed DescribeAvailabilityZones / DescribeVpcs / DescribeInstances calls. A small fake EC2
endpoint here checks each request's SigV4 signature (service ec2) against botocore's and
answers from its own table (an EC2-Classic-style cloud: no default VPC). test_cloud.py runs
the whole cloud mode against moto's server."""

import http.server
import threading
import urllib.parse
from unittest import mock

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import pytest
from botocore.exceptions import ClientError

from conftest import Env, Server, error_code, free_port, make_lb, seed_inventory, http_status

EC2_KEY, EC2_SECRET = "AKIDEC2FAKE0000000000", "ec2-secret-for-the-fake-endpoint-000000"
INSTANCES = {
    "i-0ec2aaaa0001": ("198.18.7.10", "us-east-1a", "running"),
    "i-0ec2aaaa0002": ("198.18.7.11", "us-east-1b", "running"),
    "i-0ec2aaaa0003": ("198.18.7.12", "us-east-1a", "terminated"),
}


def expected_authorization(method, url, headers, body):
    """What botocore's signer makes of the same request at the same time."""
    import datetime
    amz_date = headers["x-amz-date"]
    when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ")
    req = botocore.awsrequest.AWSRequest(method=method, url=url, data=body, headers={"Content-Type": headers["content-type"]})
    with mock.patch("botocore.auth.get_current_datetime", return_value=when):
        botocore.auth.SigV4Auth(botocore.credentials.Credentials(EC2_KEY, EC2_SECRET), "ec2", "us-east-1").add_auth(req)
    return req.headers["Authorization"]


class FakeEc2(http.server.BaseHTTPRequestHandler):
    calls = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        headers = {k.lower(): v for k, v in self.headers.items()}
        url = f"http://{headers['host']}{self.path}"
        params = dict(urllib.parse.parse_qsl(body.decode()))
        signed_ok = headers.get("authorization") == expected_authorization("POST", url, headers, body)
        FakeEc2.calls.append((params, signed_ok))
        if not signed_ok:
            return self.reply(401, "<Response><Errors><Error><Code>AuthFailure</Code><Message>bad signature</Message></Error></Errors></Response>")
        if params.get("Version") != "2016-11-15":
            return self.reply(400, "<Response><Errors><Error><Code>InvalidAction</Code><Message>x</Message></Error></Errors></Response>")
        if params.get("Action") == "DescribeAvailabilityZones":
            zones = "".join(f"<item><zoneName>{z}</zoneName><zoneState>available</zoneState></item>" for z in ("us-east-1a", "us-east-1b"))
            return self.reply(200, f"<DescribeAvailabilityZonesResponse><availabilityZoneInfo>{zones}</availabilityZoneInfo></DescribeAvailabilityZonesResponse>")
        if params.get("Action") == "DescribeVpcs":
            return self.reply(200, "<DescribeVpcsResponse><vpcSet/></DescribeVpcsResponse>")
        if params.get("Action") != "DescribeInstances":
            return self.reply(400, "<Response><Errors><Error><Code>InvalidAction</Code><Message>x</Message></Error></Errors></Response>")
        wanted = [v for k, v in params.items() if k.startswith("Filter.1.Value.")]
        assert params.get("Filter.1.Name") == "instance-id"
        items = "".join(
            f"<item><instanceId>{i}</instanceId><instanceState><name>{state}</name></instanceState>"
            f"<privateIpAddress>{addr}</privateIpAddress><placement><availabilityZone>{zone}</availabilityZone></placement></item>"
            for i, (addr, zone, state) in INSTANCES.items() if i in wanted
        )
        self.reply(200, f'<?xml version="1.0"?><DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
                        f"<requestId>r</requestId><reservationSet><item><ownerId>1</ownerId><instancesSet>{items}</instancesSet></item>"
                        f"</reservationSet></DescribeInstancesResponse>")

    def reply(self, status, text):
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def ec2_endpoint():
    FakeEc2.calls = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeEc2)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()


def ec2_server(env, endpoint, secret=EC2_SECRET):
    db = env.backend.new_db()
    seed_inventory(db)
    server = Server(db, env.backend.log_dir, ["--ec2-endpoint", endpoint, "--ec2-access-key-id", EC2_KEY],
                    env={"ELB_EC2_SECRET_ACCESS_KEY": secret}).start()
    return Env(env.backend, db, server)


def test_instances_resolved_through_ec2(env, ec2_endpoint):
    e = ec2_server(env, ec2_endpoint)
    try:
        acct = e.account()
        name = make_lb(acct.elb, zones=["us-east-1a"])
        resp = acct.elb.register_instances_with_load_balancer(LoadBalancerName=name, Instances=[{"InstanceId": "i-0ec2aaaa0001"}])
        assert resp["Instances"] == [{"InstanceId": "i-0ec2aaaa0001"}]
        params, signed_ok = FakeEc2.calls[-1]
        assert signed_ok
        assert params["Action"] == "DescribeInstances" and params["Filter.1.Value.1"] == "i-0ec2aaaa0001"
        for bad in ("i-0ec2aaaa0003", "i-0ec2ffff9999"):  # terminated, unknown
            with pytest.raises(ClientError) as exc:
                acct.elb.register_instances_with_load_balancer(LoadBalancerName=name, Instances=[{"InstanceId": bad}])
            assert error_code(exc) == "InvalidInstance"
        with pytest.raises(ClientError) as exc:  # in a zone the load balancer does not use
            acct.elb.register_instances_with_load_balancer(LoadBalancerName=name, Instances=[{"InstanceId": "i-0ec2aaaa0002"}])
        assert error_code(exc) == "InvalidConfigurationRequest"
        states = acct.elb.describe_instance_health(LoadBalancerName=name)["InstanceStates"]
        assert [(s["InstanceId"], s["State"]) for s in states] == [("i-0ec2aaaa0001", "OutOfService")]
        assert all(ok for _, ok in FakeEc2.calls)
    finally:
        e.server.stop()


def test_ec2_failures_are_service_unavailable(env, ec2_endpoint):
    e = ec2_server(env, ec2_endpoint, secret="wrong-secret")
    try:
        acct = e.account()
        with pytest.raises(ClientError) as exc:
            make_lb(acct.elb)
        assert error_code(exc) == "ServiceUnavailable" and http_status(exc) == 503
        message = exc.value.response["Error"]["Message"]
        assert "EC2" in message and "DescribeAvailabilityZones" in message and "AuthFailure" in message, message
        assert FakeEc2.calls and not FakeEc2.calls[-1][1], "the fake must have seen a bad signature"
        assert "wrong-secret" not in message
    finally:
        e.server.stop()
    down = ec2_server(env, f"http://127.0.0.1:{free_port()}/")
    try:
        acct = down.account()
        with pytest.raises(ClientError) as exc:
            make_lb(acct.elb)
        assert error_code(exc) == "ServiceUnavailable"
        assert "could not be reached" in exc.value.response["Error"]["Message"]
    finally:
        down.server.stop()
