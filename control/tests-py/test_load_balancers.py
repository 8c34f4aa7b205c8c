"""CreateLoadBalancer, DescribeLoadBalancers, DeleteLoadBalancer: success paths, defaults and
every documented error, through boto3."""

import datetime

import pytest
from botocore.exceptions import ClientError

from conftest import error_code, http_status, listener, make_lb


def describe(client, name):
    return client.describe_load_balancers(LoadBalancerNames=[name])["LoadBalancerDescriptions"][0]


def test_create_describe_delete_with_aws_defaults(acct):
    elb = acct.elb
    resp = elb.create_load_balancer(
        LoadBalancerName="web-1",
        Listeners=[listener("http", 80, 8080), listener("TCP", 2222, 22, "tcp")],
        AvailabilityZones=["us-east-1a", "us-east-1b"],
        Tags=[{"Key": "env", "Value": "prod"}],
    )
    dns = f"web-1-{acct.id}.lb.elb.local"
    assert resp["DNSName"] == dns
    d = describe(elb, "web-1")
    assert d["DNSName"] == dns
    assert d["CanonicalHostedZoneName"] == dns
    assert d["Scheme"] == "internet-facing"
    assert d["AvailabilityZones"] == ["us-east-1a", "us-east-1b"]
    listeners = [x["Listener"] for x in d["ListenerDescriptions"]]
    # Protocols are upper-cased, InstanceProtocol defaults from Protocol, order is kept.
    assert listeners == [
        {"Protocol": "HTTP", "LoadBalancerPort": 80, "InstanceProtocol": "HTTP", "InstancePort": 8080},
        {"Protocol": "TCP", "LoadBalancerPort": 2222, "InstanceProtocol": "TCP", "InstancePort": 22},
    ]
    assert d["HealthCheck"] == {"Target": "TCP:8080", "Interval": 30, "Timeout": 5, "UnhealthyThreshold": 2, "HealthyThreshold": 10}
    assert d["Instances"] == []
    assert d["Policies"] == {"AppCookieStickinessPolicies": [], "LBCookieStickinessPolicies": [], "OtherPolicies": []}
    assert isinstance(d["CreatedTime"], datetime.datetime)
    assert abs((datetime.datetime.now(datetime.timezone.utc) - d["CreatedTime"]).total_seconds()) < 120
    attrs = elb.describe_load_balancer_attributes(LoadBalancerName="web-1")["LoadBalancerAttributes"]
    assert attrs["CrossZoneLoadBalancing"] == {"Enabled": False}
    assert attrs["ConnectionDraining"] == {"Enabled": False, "Timeout": 300}
    assert attrs["ConnectionSettings"] == {"IdleTimeout": 60}
    assert attrs["AccessLog"]["Enabled"] is False
    tags = elb.describe_tags(LoadBalancerNames=["web-1"])["TagDescriptions"][0]["Tags"]
    assert tags == [{"Key": "env", "Value": "prod"}]

    elb.delete_load_balancer(LoadBalancerName="web-1")
    assert elb.describe_load_balancers()["LoadBalancerDescriptions"] == []
    # Idempotent.
    elb.delete_load_balancer(LoadBalancerName="web-1")
    elb.delete_load_balancer(LoadBalancerName="never-existed")


def test_request_id_in_response(acct):
    resp = acct.elb.describe_load_balancers()
    rid = resp["ResponseMetadata"]["RequestId"]
    assert len(rid) == 36 and rid.count("-") == 4


def test_describe_unknown_is_not_found(acct):
    with pytest.raises(acct.elb.exceptions.AccessPointNotFoundException) as e:
        acct.elb.describe_load_balancers(LoadBalancerNames=["nope"])
    assert error_code(e) == "LoadBalancerNotFound"
    assert "nope" in e.value.response["Error"]["Message"]
    assert http_status(e) == 400


def test_duplicate_name(acct):
    name = make_lb(acct.elb)
    with pytest.raises(acct.elb.exceptions.DuplicateAccessPointNameException):
        make_lb(acct.elb, name)
    # Names that differ only in case collide in DNS, so they are duplicates as well.
    with pytest.raises(ClientError) as e:
        make_lb(acct.elb, name.upper())
    assert error_code(e) == "DuplicateLoadBalancerName"


@pytest.mark.parametrize("name", ["-lead", "trail-", "under_score", "x" * 33, "dot.ted", "verbose"])
def test_invalid_names(acct, name):
    with pytest.raises(ClientError) as e:
        make_lb(acct.elb, name)
    assert error_code(e) == "ValidationError"
    assert http_status(e) == 400


@pytest.mark.parametrize(
    "listeners,code",
    [
        ([listener("HTTP", 80, 80, "TCP")], "ValidationError"),  # layer 7 front, layer 4 back
        ([listener("TCP", 80, 80, "HTTPS")], "ValidationError"),
        ([listener("HTTPS", 443, 80, "HTTP")], "ValidationError"),  # certificate required
        ([listener("FTP", 21, 21)], "UnsupportedProtocol"),
        ([listener("HTTP", 0, 80)], "ValidationError"),
        ([listener("HTTP", 80, 70000)], "ValidationError"),
        ([listener("HTTP", 80, 80), listener("HTTP", 80, 81)], "DuplicateListener"),
        ([listener("HTTPS", 443, 80, "HTTP", "arn:aws:iam::000000000000:server-certificate/x")], "CertificateNotFound"),
        ([listener("HTTP", 80, 443, "HTTP"), listener("SSL", 443, 443, "SSL", "CERT")], "CertificateNotFound"),
    ],
)
def test_listener_errors(acct, listeners, code):
    with pytest.raises(ClientError) as e:
        make_lb(acct.elb, listeners=listeners)
    assert error_code(e) == code


def test_listener_backend_security_must_agree(acct):
    cert = acct.certificate()
    with pytest.raises(ClientError) as e:
        make_lb(acct.elb, listeners=[listener("HTTP", 80, 443), listener("HTTPS", 443, 443, "HTTPS", cert)])
    assert error_code(e) == "InvalidConfigurationRequest"
    assert http_status(e) == 409


def test_https_listener_with_certificate(acct):
    cert = acct.certificate()
    name = make_lb(acct.elb, listeners=[listener("HTTPS", 443, 80, "HTTP", cert)])
    l = describe(acct.elb, name)["ListenerDescriptions"][0]["Listener"]
    assert l["SSLCertificateId"] == cert and l["InstanceProtocol"] == "HTTP"


@pytest.mark.parametrize("which", ["unknown-iam", "acm", "other-account"])
def test_listener_certificate_must_exist(env, acct, which):
    """A certificate that control cannot serve is refused at once, never stored and ignored."""
    if which == "unknown-iam":
        cert = f"arn:aws:iam::{acct.id}:server-certificate/never-uploaded"
    elif which == "acm":
        cert = f"arn:aws:acm:us-east-1:{acct.id}:certificate/abc-123"
    else:
        cert = env.account().certificate()
    with pytest.raises(ClientError) as e:
        make_lb(acct.elb, listeners=[listener("HTTPS", 443, 80, "HTTP", cert)])
    assert error_code(e) == "CertificateNotFound"
    assert acct.elb.describe_load_balancers()["LoadBalancerDescriptions"] == []


def test_empty_listeners_and_placement_errors(acct):
    with pytest.raises(ClientError) as e:
        acct.elb.create_load_balancer(LoadBalancerName="x1", Listeners=[], AvailabilityZones=["us-east-1a"])
    assert error_code(e) == "ValidationError"
    with pytest.raises(ClientError) as e:
        acct.elb.create_load_balancer(LoadBalancerName="x1", Listeners=[listener()])
    assert error_code(e) == "ValidationError"
    with pytest.raises(ClientError) as e:
        make_lb(acct.elb, zones=["us-east-1z"])
    assert error_code(e) == "ValidationError"
    # A zone of another region does not exist for this region.
    with pytest.raises(ClientError) as e:
        make_lb(acct.elb, zones=["eu-west-1a"])
    assert error_code(e) == "ValidationError"
    with pytest.raises(ClientError) as e:
        make_lb(acct.elb, Scheme="sideways")
    assert error_code(e) == "ValidationError"
    with pytest.raises(ClientError) as e:
        make_lb(acct.elb, Scheme="internal")
    assert error_code(e) == "InvalidScheme"
    # Built-in groups must exist, and be groups of the load balancer's VPC (none here).
    for missing_or_elsewhere in ("sg-123", "sg-0aa"):
        with pytest.raises(ClientError) as e:
            make_lb(acct.elb, SecurityGroups=[missing_or_elsewhere])
        assert error_code(e) == "InvalidSecurityGroup"
    assert acct.elb.describe_load_balancers()["LoadBalancerDescriptions"] == []


def test_vpc_load_balancer_internal_scheme_subnets_and_security_groups(acct):
    elb = acct.elb
    name = make_lb(elb, Subnets=["subnet-0a1"], Scheme="internal", SecurityGroups=["sg-0aa"])
    d = describe(elb, name)
    assert d["DNSName"] == f"internal-{name}-{acct.id}.lb.elb.local"
    assert d["Scheme"] == "internal"
    assert d["VPCId"] == "vpc-01"
    assert d["Subnets"] == ["subnet-0a1"] and d["AvailabilityZones"] == ["us-east-1a"]
    assert d["SecurityGroups"] == ["sg-0aa"]

    assert elb.attach_load_balancer_to_subnets(LoadBalancerName=name, Subnets=["subnet-0b1"])["Subnets"] == ["subnet-0a1", "subnet-0b1"]
    assert describe(elb, name)["AvailabilityZones"] == ["us-east-1a", "us-east-1b"]
    with pytest.raises(elb.exceptions.SubnetNotFoundException):
        elb.attach_load_balancer_to_subnets(LoadBalancerName=name, Subnets=["subnet-0ffff"])
    with pytest.raises(ClientError) as e:  # other VPC, and a second subnet in us-east-1a
        elb.attach_load_balancer_to_subnets(LoadBalancerName=name, Subnets=["subnet-0a2"])
    assert error_code(e) == "InvalidConfigurationRequest"
    assert elb.detach_load_balancer_from_subnets(LoadBalancerName=name, Subnets=["subnet-0a1"])["Subnets"] == ["subnet-0b1"]
    with pytest.raises(ClientError) as e:
        elb.detach_load_balancer_from_subnets(LoadBalancerName=name, Subnets=["subnet-0b1"])
    assert error_code(e) == "InvalidConfigurationRequest"

    assert elb.apply_security_groups_to_load_balancer(LoadBalancerName=name, SecurityGroups=["sg-1", "sg-2"])["SecurityGroups"] == ["sg-1", "sg-2"]
    with pytest.raises(elb.exceptions.InvalidSecurityGroupException):
        elb.apply_security_groups_to_load_balancer(LoadBalancerName=name, SecurityGroups=["default"])
    with pytest.raises(ClientError) as e:
        make_lb(elb, Subnets=["subnet-0a1", "subnet-0a2"])
    assert error_code(e) == "InvalidConfigurationRequest"


def test_zones_enable_disable(acct):
    elb = acct.elb
    name = make_lb(elb)
    assert elb.enable_availability_zones_for_load_balancer(LoadBalancerName=name, AvailabilityZones=["us-east-1b", "us-east-1a"])["AvailabilityZones"] == ["us-east-1a", "us-east-1b"]
    with pytest.raises(ClientError) as e:
        elb.enable_availability_zones_for_load_balancer(LoadBalancerName=name, AvailabilityZones=["us-east-1q"])
    assert error_code(e) == "ValidationError"
    assert elb.disable_availability_zones_for_load_balancer(LoadBalancerName=name, AvailabilityZones=["us-east-1a"])["AvailabilityZones"] == ["us-east-1b"]
    with pytest.raises(ClientError) as e:
        elb.disable_availability_zones_for_load_balancer(LoadBalancerName=name, AvailabilityZones=["us-east-1b"])
    assert error_code(e) == "InvalidConfigurationRequest"
    assert http_status(e) == 409
    # A load balancer placed by zones takes built-in groups made without a VPC, not a VPC's.
    assert elb.apply_security_groups_to_load_balancer(LoadBalancerName=name, SecurityGroups=["sg-0c1"])["SecurityGroups"] == ["sg-0c1"]
    assert describe(elb, name)["SecurityGroups"] == ["sg-0c1"]
    with pytest.raises(ClientError) as e:
        elb.apply_security_groups_to_load_balancer(LoadBalancerName=name, SecurityGroups=["sg-1"])
    assert error_code(e) == "InvalidSecurityGroup"
    # Subnets are for VPC load balancers only.
    with pytest.raises(ClientError) as e:
        elb.attach_load_balancer_to_subnets(LoadBalancerName=name, Subnets=["subnet-0a1"])
    assert error_code(e) == "InvalidConfigurationRequest"
    with pytest.raises(elb.exceptions.AccessPointNotFoundException):
        elb.enable_availability_zones_for_load_balancer(LoadBalancerName="ghost", AvailabilityZones=["us-east-1a"])


def test_paging_with_paginator(acct, env):
    elb = acct.elb
    env.admin("quota", "set", "--account", acct.id, "--name", "classic-load-balancers", "--value", "30")
    names = sorted(f"page-{i:02d}" for i in range(23))
    for n in names:
        make_lb(elb, n)
    first = elb.describe_load_balancers(PageSize=10)
    assert [d["LoadBalancerName"] for d in first["LoadBalancerDescriptions"]] == names[:10]
    assert first["NextMarker"]
    pages = list(elb.get_paginator("describe_load_balancers").paginate(PaginationConfig={"PageSize": 10}))
    assert [len(p["LoadBalancerDescriptions"]) for p in pages] == [10, 10, 3]
    assert "NextMarker" not in pages[-1]
    seen = [d["LoadBalancerName"] for p in pages for d in p["LoadBalancerDescriptions"]]
    assert seen == names
    # Paging over an explicit list of names.
    some = elb.describe_load_balancers(LoadBalancerNames=names[:5], PageSize=2)
    assert [d["LoadBalancerName"] for d in some["LoadBalancerDescriptions"]] == names[:2]
    rest = elb.describe_load_balancers(LoadBalancerNames=names[:5], PageSize=2, Marker=some["NextMarker"])
    assert [d["LoadBalancerName"] for d in rest["LoadBalancerDescriptions"]] == names[2:4]
    for bad in (0, 401):
        with pytest.raises(ClientError) as e:
            acct.raw.describe_load_balancers(PageSize=bad)
        assert error_code(e) == "ValidationError"
