"""Control in front of an EC2-compatible cloud: moto's server (from PyPI) as EC2, IAM and ACM,
driven with boto3 as a user of a real cloud would. Zones, subnets, VPCs, security groups and
instances come from the cloud (no `admin zone|subnet|instance add` for the API); certificates
from its IAM and ACM, with the private key a servo needs obtained honestly or the listener
refused; a cloud that is down is a clear ServiceUnavailable."""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import botocore.config
import pytest
from botocore.exceptions import ClientError

from conftest import REGION, Env, Server, elb_client, error_code, free_port, http_status, listener, make_certificate, run_admin, seed_inventory
from test_servo import FakeServo

CLOUD_KEY, CLOUD_SECRET = "AKIDCLOUDTEST0000001", "cloud-test-secret-0000000000000000"
WEST = "eu-west-1"


@pytest.fixture(scope="module")
def moto():
    exe = Path(sys.executable).parent / "moto_server"
    if not exe.exists():
        pytest.fail(f"moto_server not installed in the test venv ({exe}): pip install -r control/tests-py/requirements.txt")
    port = free_port()
    # Certificates requested from ACM are issued at once (moto validates them after this many
    # seconds).
    env = dict(os.environ, MOTO_ACM_VALIDATION_WAIT="0")
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            boto3.client("ec2", endpoint_url=url, region_name=REGION, aws_access_key_id=CLOUD_KEY,
                         aws_secret_access_key=CLOUD_SECRET).describe_regions()
            break
        except Exception:  # noqa: BLE001 - not listening yet
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("moto_server did not start")
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(10)


def cloud_client(moto, service, region=REGION):
    return boto3.client(service, endpoint_url=moto, region_name=region, aws_access_key_id=CLOUD_KEY,
                        aws_secret_access_key=CLOUD_SECRET,
                        config=botocore.config.Config(retries={"total_max_attempts": 1}))


def cloud_args(ec2=None, iam=None, acm=None):
    args = ["--region", REGION, "--region", WEST, "--servo-heartbeat", "1", "--servo-timeout", "3",
            "--cloud-access-key-id", CLOUD_KEY]
    for flag, url in (("--ec2-endpoint", ec2), ("--iam-endpoint", iam), ("--acm-endpoint", acm)):
        if url:
            args += [flag, url]
    return args


def start_cloud_server(backend, args):
    db = backend.new_db()
    seed_inventory(db)
    server = Server(db, backend.log_dir, args, env={"ELB_CLOUD_SECRET_ACCESS_KEY": CLOUD_SECRET}).start()
    return Env(backend, db, server)


@pytest.fixture(scope="module")
def cloud(backend, moto):
    env = start_cloud_server(backend, cloud_args(moto, moto, moto))
    yield env
    env.server.stop()


@pytest.fixture
def servos():
    made = []
    yield made
    for s in made:
        s.stop()


def servo_in(env, servos, zone, region=REGION):
    """A servo of our own, alone in `zone` (the servo zone is declared to control; the API's
    zones come from the cloud), so it gets the load balancers of that zone."""
    if zone not in {z["ZoneName"] for z in run_admin(env.db, "zone", "list")}:
        run_admin(env.db, "zone", "add", "--name", zone, "--region", region)
    octet = uuid.uuid4().int % 200 + 20
    s = FakeServo(env, zone, [f"198.18.{octet}.{h}" for h in range(1, 5)], [f"198.19.{octet}.{h}" for h in range(1, 5)], None)
    s.start()
    servos.append(s)
    return s


def poll_lb(servo, name, predicate, timeout=5.0):
    """The servo's view of load balancer `name` once `predicate` holds for it."""
    deadline = time.time() + timeout
    while True:
        lbs = servo.lbs()
        lb = next((v for k, v in lbs.items() if k.startswith(name + "-")), None)
        if lb is not None and predicate(lb):
            return lb
        if time.time() > deadline:
            raise AssertionError(f"servo document for {name}: {lb}")
        time.sleep(0.05)


def describe(elb, name):
    return elb.describe_load_balancers(LoadBalancerNames=[name])["LoadBalancerDescriptions"][0]


def default_vpc(ec2):
    return next(v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"] if v["IsDefault"])


def default_subnet(ec2, zone):
    subnets = ec2.describe_subnets(Filters=[{"Name": "availability-zone", "Values": [zone]}])["Subnets"]
    return next(s["SubnetId"] for s in subnets if s["DefaultForAz"])


def default_group(ec2, vpc):
    groups = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "group-name", "Values": ["default"]}])
    return groups["SecurityGroups"][0]["GroupId"]


def test_default_vpc_load_balancers_take_security_groups(cloud, moto, servos):
    ec2 = cloud_client(moto, "ec2")
    acct = cloud.account()
    vpc = default_vpc(ec2)
    web = ec2.create_security_group(GroupName="web-" + uuid.uuid4().hex[:6], Description="web", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=web, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": "198.18.1.0/24"}]}])
    servo = servo_in(cloud, servos, "us-east-1d")

    # Created with AvailabilityZones and SecurityGroups: it lives in the default VPC.
    name = make_lb_(acct, zones=["us-east-1d"], SecurityGroups=[web])
    d = describe(acct.elb, name)
    assert d["VPCId"] == vpc
    assert d["Subnets"] == [default_subnet(ec2, "us-east-1d")]
    assert d["AvailabilityZones"] == ["us-east-1d"]
    assert d["SecurityGroups"] == [web]
    # The servo gets the group's rules with the load balancer.
    lb = poll_lb(servo, name, lambda lb: "SecurityGroups" in lb)
    assert lb["SecurityGroups"] == [{"GroupId": web, "Ingress": [
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "CidrIp": "198.18.1.0/24"}]}]

    # A rule added in the cloud reaches the servo within a second (the refresher reads the
    # groups in use every 500 ms).
    ec2.authorize_security_group_ingress(GroupId=web, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": "198.18.2.0/24"}]}])
    t0 = time.time()
    poll_lb(servo, name, lambda lb: any(r["CidrIp"] == "198.18.2.0/24" for r in lb["SecurityGroups"][0]["Ingress"]), timeout=3)
    assert time.time() - t0 < 1.5, "the rule change reached the servo's document late"
    ec2.revoke_security_group_ingress(GroupId=web, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": "198.18.1.0/24"}]}])
    poll_lb(servo, name, lambda lb: [r["CidrIp"] for r in lb["SecurityGroups"][0]["Ingress"]] == ["198.18.2.0/24"], timeout=3)

    # Without SecurityGroups: the default VPC's default group is filled in.
    plain = make_lb_(acct, zones=["us-east-1d"])
    assert describe(acct.elb, plain)["SecurityGroups"] == [default_group(ec2, vpc)]
    # moto's default group has no ingress rule: the servo admits no one (as on AWS, where the
    # default group admits only its own members).
    assert poll_lb(servo, plain, lambda lb: "SecurityGroups" in lb)["SecurityGroups"][0]["Ingress"] == []

    # ApplySecurityGroupsToLoadBalancer replaces them; unknown groups and other VPCs' are refused.
    assert acct.elb.apply_security_groups_to_load_balancer(LoadBalancerName=plain, SecurityGroups=[web])["SecurityGroups"] == [web]
    other_vpc = ec2.create_vpc(CidrBlock="10.77.0.0/16")["Vpc"]["VpcId"]
    elsewhere = ec2.create_security_group(GroupName="x-" + uuid.uuid4().hex[:6], Description="x", VpcId=other_vpc)["GroupId"]
    for bad in ("sg-0123456789abcdef0", elsewhere):
        with pytest.raises(ClientError) as e:
            acct.elb.apply_security_groups_to_load_balancer(LoadBalancerName=plain, SecurityGroups=[bad])
        assert error_code(e) == "InvalidSecurityGroup", bad
        with pytest.raises(ClientError) as e:
            make_lb_(acct, zones=["us-east-1d"], SecurityGroups=[bad])
        assert error_code(e) == "InvalidSecurityGroup", bad


def make_lb_(acct, zones=None, listeners=None, region_client=None, **kw):
    elb = region_client or acct.elb
    name = "lb-" + uuid.uuid4().hex[:10]
    args = {"LoadBalancerName": name, "Listeners": listeners or [listener()]}
    if zones:
        args["AvailabilityZones"] = zones
    args.update(kw)
    elb.create_load_balancer(**args)
    return name


def test_subnets_created_in_the_cloud(cloud, moto):
    ec2 = cloud_client(moto, "ec2")
    acct = cloud.account()
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    a = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.1.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    b = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.2.0/24", AvailabilityZone="us-east-1b")["Subnet"]["SubnetId"]
    other = ec2.create_subnet(VpcId=ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"], CidrBlock="10.30.1.0/24",
                              AvailabilityZone="us-east-1b")["Subnet"]["SubnetId"]

    name = make_lb_(acct, Subnets=[a], Scheme="internal")
    d = describe(acct.elb, name)
    assert (d["VPCId"], d["Subnets"], d["AvailabilityZones"]) == (vpc, [a], ["us-east-1a"])
    assert d["SecurityGroups"] == [default_group(ec2, vpc)], "the VPC's default group"
    assert d["Scheme"] == "internal"

    assert acct.elb.attach_load_balancer_to_subnets(LoadBalancerName=name, Subnets=[b])["Subnets"] == [a, b]
    assert describe(acct.elb, name)["AvailabilityZones"] == ["us-east-1a", "us-east-1b"]
    with pytest.raises(ClientError) as e:
        acct.elb.attach_load_balancer_to_subnets(LoadBalancerName=name, Subnets=[other])
    assert error_code(e) == "InvalidConfigurationRequest"
    with pytest.raises(acct.elb.exceptions.SubnetNotFoundException):
        acct.elb.attach_load_balancer_to_subnets(LoadBalancerName=name, Subnets=["subnet-0123456789abcdef0"])
    assert acct.elb.detach_load_balancer_from_subnets(LoadBalancerName=name, Subnets=[a])["Subnets"] == [b]
    assert describe(acct.elb, name)["AvailabilityZones"] == ["us-east-1b"]
    # Zones of a non-default VPC change through subnets.
    with pytest.raises(ClientError) as e:
        acct.elb.enable_availability_zones_for_load_balancer(LoadBalancerName=name, AvailabilityZones=["us-east-1a"])
    assert error_code(e) == "InvalidConfigurationRequest"
    with pytest.raises(acct.elb.exceptions.SubnetNotFoundException):
        make_lb_(acct, Subnets=["subnet-0123456789abcdef0"])


def test_zones_come_from_the_cloud_in_every_region(cloud, moto, servos):
    acct = cloud.account()
    west = elb_client(cloud.url, acct.key_id, acct.secret, region=WEST)
    ec2_west = cloud_client(moto, "ec2", WEST)
    # A zone the cloud has but no servo serves: refused for want of a servo (readiness), not
    # as an unknown zone.
    with pytest.raises(ClientError) as e:
        make_lb_(acct, zones=["us-east-1e"])
    assert error_code(e) == "InvalidConfigurationRequest" and "us-east-1e" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        make_lb_(acct, zones=["us-east-1q"])
    assert error_code(e) == "ValidationError"

    # eu-west-1: zones resolved for that region (signed for it), in its default VPC.
    servo_in(cloud, servos, "eu-west-1b", WEST)
    name = make_lb_(acct, zones=["eu-west-1a"], region_client=west)
    d = describe(west, name)
    assert d["VPCId"] == default_vpc(ec2_west)
    assert d["Subnets"] == [default_subnet(ec2_west, "eu-west-1a")]
    assert west.enable_availability_zones_for_load_balancer(LoadBalancerName=name, AvailabilityZones=["eu-west-1b"])["AvailabilityZones"] == ["eu-west-1a", "eu-west-1b"]
    assert describe(west, name)["Subnets"] == [default_subnet(ec2_west, "eu-west-1a"), default_subnet(ec2_west, "eu-west-1b")]
    with pytest.raises(ClientError) as e:  # a zone of another region
        west.enable_availability_zones_for_load_balancer(LoadBalancerName=name, AvailabilityZones=["us-east-1a"])
    assert error_code(e) == "ValidationError"
    assert west.disable_availability_zones_for_load_balancer(LoadBalancerName=name, AvailabilityZones=["eu-west-1a"])["AvailabilityZones"] == ["eu-west-1b"]
    assert describe(west, name)["Subnets"] == [default_subnet(ec2_west, "eu-west-1b")]


def test_instances_from_the_cloud(cloud, moto):
    ec2 = cloud_client(moto, "ec2")
    acct = cloud.account()
    image = ec2.describe_images()["Images"][0]["ImageId"]
    running = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, Placement={"AvailabilityZone": "us-east-1a"})["Instances"][0]
    name = make_lb_(acct, zones=["us-east-1a"])
    resp = acct.elb.register_instances_with_load_balancer(LoadBalancerName=name, Instances=[{"InstanceId": running["InstanceId"]}])
    assert resp["Instances"] == [{"InstanceId": running["InstanceId"]}]
    with pytest.raises(ClientError) as e:
        acct.elb.register_instances_with_load_balancer(LoadBalancerName=name, Instances=[{"InstanceId": "i-0123456789abcdef0"}])
    assert error_code(e) == "InvalidInstance"


def https(cert, port=443):
    return listener("HTTPS", port, 80, "HTTP", cert)


def test_https_listener_with_a_cloud_iam_certificate(cloud, moto):
    iam = cloud_client(moto, "iam")
    acct = cloud.account()
    body, key = make_certificate("iam-cloud.example.test")
    cert_name = "site-" + uuid.uuid4().hex[:6]
    arn = iam.upload_server_certificate(ServerCertificateName=cert_name, CertificateBody=body, PrivateKey=key)["ServerCertificateMetadata"]["Arn"]
    # The cloud's IAM never gives out the key: no servo could serve it yet, and the API says
    # what to do.
    with pytest.raises(ClientError) as e:
        make_lb_(acct, zones=["us-east-1a"], listeners=[https(arn)])
    assert error_code(e) == "InvalidConfigurationRequest"
    message = e.value.response["Error"]["Message"]
    assert "GetServerCertificate" in message and "upload-server-certificate" in message, message
    # The same certificate with its key uploaded to control's own IAM: the cloud ARN works.
    acct.iam.upload_server_certificate(ServerCertificateName="copy-" + cert_name, CertificateBody=body, PrivateKey=key)
    name = make_lb_(acct, zones=["us-east-1a"], listeners=[https(arn)])
    assert describe(acct.elb, name)["ListenerDescriptions"][0]["Listener"]["SSLCertificateId"] == arn
    # Control's own ARNs work as before, and an unknown cloud ARN is CertificateNotFound.
    own = acct.certificate()
    acct.elb.set_load_balancer_listener_ssl_certificate(LoadBalancerName=name, LoadBalancerPort=443, SSLCertificateId=own)
    for unknown in (arn.rsplit("/", 1)[0] + "/no-such-certificate", f"arn:aws:iam::{acct.id}:server-certificate/nope"):
        with pytest.raises(ClientError) as e:
            acct.elb.set_load_balancer_listener_ssl_certificate(LoadBalancerName=name, LoadBalancerPort=443, SSLCertificateId=unknown)
        assert error_code(e) == "CertificateNotFound", unknown


def test_https_listener_with_an_acm_certificate(cloud, moto):
    acm = cloud_client(moto, "acm")
    acct = cloud.account()
    domain = f"acm-{uuid.uuid4().hex[:6]}.example.test"
    exportable = acm.request_certificate(DomainName=domain, Options={"Export": "ENABLED"})["CertificateArn"]
    deadline = time.time() + 10
    while acm.describe_certificate(CertificateArn=exportable)["Certificate"]["Status"] != "ISSUED":
        assert time.time() < deadline, "moto did not issue the certificate"
        time.sleep(0.2)
    # Exportable: control exports it (ExportCertificate, one-time passphrase), decrypts the
    # key and checks it against the certificate before it accepts the listener.
    name = make_lb_(acct, zones=["us-east-1a"], listeners=[https(exportable)])
    assert describe(acct.elb, name)["ListenerDescriptions"][0]["Listener"]["SSLCertificateId"] == exportable
    acct.elb.create_load_balancer_listeners(LoadBalancerName=name, Listeners=[listener("SSL", 8443, 8080, "TCP", exportable)])

    # Imported: ACM keeps the key. Refused until the same certificate is uploaded to control.
    body, key = make_certificate(f"imported-{uuid.uuid4().hex[:6]}.example.test")
    imported = acm.import_certificate(Certificate=body.encode(), PrivateKey=key.encode())["CertificateArn"]
    with pytest.raises(ClientError) as e:
        acct.elb.create_load_balancer_listeners(LoadBalancerName=name, Listeners=[https(imported, 444)])
    assert error_code(e) == "InvalidConfigurationRequest"
    assert "Export=ENABLED" in e.value.response["Error"]["Message"]
    acct.iam.upload_server_certificate(ServerCertificateName="imp-" + uuid.uuid4().hex[:6], CertificateBody=body, PrivateKey=key)
    acct.elb.create_load_balancer_listeners(LoadBalancerName=name, Listeners=[https(imported, 444)])

    unknown = exportable.rsplit("/", 1)[0] + "/" + str(uuid.uuid4())
    with pytest.raises(ClientError) as e:
        acct.elb.set_load_balancer_listener_ssl_certificate(LoadBalancerName=name, LoadBalancerPort=443, SSLCertificateId=unknown)
    assert error_code(e) == "CertificateNotFound"


def test_attributes_as_aws_shapes_them(cloud):
    acct = cloud.account()
    name = make_lb_(acct, zones=["us-east-1a"])
    from test_attributes_tags_limits import NEW_LB_ATTRIBUTES
    assert acct.elb.describe_load_balancer_attributes(LoadBalancerName=name)["LoadBalancerAttributes"] == NEW_LB_ATTRIBUTES


def test_a_cloud_that_is_down_is_a_clear_error(backend):
    down = f"http://127.0.0.1:{free_port()}/"
    env = start_cloud_server(backend, cloud_args(down, down, down))
    try:
        acct = env.account()
        with pytest.raises(ClientError) as e:
            make_lb_(acct, zones=["us-east-1a"])
        assert (error_code(e), http_status(e)) == ("ServiceUnavailable", 503)
        message = e.value.response["Error"]["Message"]
        assert "EC2" in message and "DescribeAvailabilityZones" in message and "could not be reached" in message, message
        assert "127.0.0.1" not in message, "the endpoint's address stays in the log"
        with pytest.raises(ClientError) as e:
            make_lb_(acct, Subnets=["subnet-0123456789abcdef0"])
        assert error_code(e) == "ServiceUnavailable" and "DescribeSubnets" in e.value.response["Error"]["Message"]
        body, _ = make_certificate("down.example.test")
        for arn, service in (("arn:aws:iam::123456789012:server-certificate/x", "IAM"),
                             ("arn:aws:acm:us-east-1:123456789012:certificate/x", "ACM")):
            with pytest.raises(ClientError) as e:
                acct.elb.create_load_balancer(LoadBalancerName="tls", Listeners=[https(arn)], AvailabilityZones=["us-east-1a"])
            assert error_code(e) == "ServiceUnavailable" and service in e.value.response["Error"]["Message"], service
        assert acct.elb.describe_load_balancers()["LoadBalancerDescriptions"] == []
        assert "cloud call failed" in env.server.log_text()
    finally:
        env.server.stop()
