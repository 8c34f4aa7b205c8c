"""Documented errors not covered elsewhere (every load-balancer-scoped action on a missing load
balancer, policy limits, create-time placement errors), the admin commands' listings, and a
server serving two regions."""

import time

import pytest
from botocore.exceptions import ClientError

from conftest import Server, elb_client, error_code, listener, make_lb

HC = {"Target": "TCP:80", "Interval": 30, "Timeout": 5, "UnhealthyThreshold": 2, "HealthyThreshold": 10}

MISSING_LB_CALLS = {
    "configure_health_check": dict(HealthCheck=HC),
    "create_app_cookie_stickiness_policy": dict(PolicyName="p", CookieName="c"),
    "create_lb_cookie_stickiness_policy": dict(PolicyName="p"),
    "create_load_balancer_policy": dict(PolicyName="p", PolicyTypeName="ProxyProtocolPolicyType",
                                        PolicyAttributes=[{"AttributeName": "ProxyProtocol", "AttributeValue": "true"}]),
    "delete_load_balancer_policy": dict(PolicyName="p"),
    "describe_load_balancer_policies": dict(),
    "deregister_instances_from_load_balancer": dict(Instances=[{"InstanceId": "i-0abc"}]),
    "disable_availability_zones_for_load_balancer": dict(AvailabilityZones=["us-east-1a"]),
    "apply_security_groups_to_load_balancer": dict(SecurityGroups=["sg-1"]),
    "attach_load_balancer_to_subnets": dict(Subnets=["subnet-0a1"]),
    "detach_load_balancer_from_subnets": dict(Subnets=["subnet-0a1"]),
    "set_load_balancer_listener_ssl_certificate": dict(LoadBalancerPort=443, SSLCertificateId="arn:aws:iam::{acct}:server-certificate/c"),
    "set_load_balancer_policies_for_backend_server": dict(InstancePort=80, PolicyNames=[]),
    "set_load_balancer_policies_of_listener": dict(LoadBalancerPort=80, PolicyNames=[]),
    "modify_load_balancer_attributes": dict(LoadBalancerAttributes={"CrossZoneLoadBalancing": {"Enabled": True}}),
}


@pytest.mark.parametrize("operation", sorted(MISSING_LB_CALLS))
def test_missing_load_balancer(acct, operation):
    kwargs = {k: (v.format(acct=acct.id) if isinstance(v, str) else v) for k, v in MISSING_LB_CALLS[operation].items()}
    with pytest.raises(acct.elb.exceptions.AccessPointNotFoundException):
        getattr(acct.elb, operation)(LoadBalancerName="missing-lb", **kwargs)


def test_remove_tags_missing_load_balancer(acct):
    with pytest.raises(acct.elb.exceptions.AccessPointNotFoundException):
        acct.elb.remove_tags(LoadBalancerNames=["missing-lb"], Tags=[{"Key": "k"}])


def test_create_time_placement_and_tag_errors(acct):
    elb = acct.elb
    with pytest.raises(elb.exceptions.SubnetNotFoundException):
        make_lb(elb, Subnets=["subnet-0nothere"])
    with pytest.raises(elb.exceptions.InvalidSecurityGroupException):
        make_lb(elb, Subnets=["subnet-0a1"], SecurityGroups=["not-a-group"])
    with pytest.raises(ClientError) as e:
        make_lb(elb, Subnets=["subnet-0a1"], SecurityGroups=[f"sg-{i}" for i in range(6)])
    assert error_code(e) == "ValidationError"
    with pytest.raises(elb.exceptions.DuplicateTagKeysException):
        make_lb(elb, Tags=[{"Key": "a", "Value": "1"}, {"Key": "a", "Value": "2"}])
    with pytest.raises(ClientError) as e:
        make_lb(elb, zones=["us-east-1a"], Subnets=["subnet-0a1"], AvailabilityZones=["us-east-1a"])
    assert error_code(e) == "ValidationError"
    assert elb.describe_load_balancers()["LoadBalancerDescriptions"] == []


def test_policy_limits_and_unknown_backend_policy(acct):
    elb = acct.elb
    name = make_lb(elb, listeners=[listener("TCP", 80, 80)])
    with pytest.raises(elb.exceptions.PolicyNotFoundException):
        elb.set_load_balancer_policies_for_backend_server(LoadBalancerName=name, InstancePort=80, PolicyNames=["nope"])
    for i in range(100):
        elb.create_lb_cookie_stickiness_policy(LoadBalancerName=name, PolicyName=f"p{i}", CookieExpirationPeriod=i + 1)
    with pytest.raises(elb.exceptions.TooManyPoliciesException):
        elb.create_lb_cookie_stickiness_policy(LoadBalancerName=name, PolicyName="one-too-many")
    assert len(elb.describe_load_balancer_policies(LoadBalancerName=name)["PolicyDescriptions"]) == 100
    elb.delete_load_balancer_policy(LoadBalancerName=name, PolicyName="p0")
    elb.delete_load_balancer_policy(LoadBalancerName=name, PolicyName="p0")  # already gone: no error
    elb.create_lb_cookie_stickiness_policy(LoadBalancerName=name, PolicyName="one-more")


def test_admin_listings(env):
    acct = env.account()
    user = env.admin("user", "create", "--account", acct.name, "--name", "alice")
    assert user["UserName"] == "alice" and user["AccountId"] == acct.id and user["AccessKeyId"].startswith("AKIA")
    assert [u["UserName"] for u in env.admin("user", "list", "--account", acct.id)] == ["alice", "root"]
    key = env.admin("key", "create", "--account", acct.id, "--user", "alice")
    keys = env.admin("key", "list", "--account", acct.id)
    assert {k["AccessKeyId"] for k in keys} == {acct.key_id, user["AccessKeyId"], key["AccessKeyId"]}
    assert all("SecretAccessKey" not in k for k in keys)
    # The new key works.
    alice = elb_client(env.url, key["AccessKeyId"], key["SecretAccessKey"])
    with pytest.raises(ClientError) as e:
        alice.describe_load_balancers()
    assert error_code(e) == "AccessDenied"
    env.admin("policy", "put", "--account", acct.id, "--user", "alice", "--name", "read",
              "--document", '{"Statement":{"Effect":"Allow","Action":"elasticloadbalancing:Describe*","Resource":"*"}}')
    assert alice.describe_load_balancers()["LoadBalancerDescriptions"] == []
    policies = env.admin("policy", "list", "--account", acct.id)
    assert [(p["UserName"], p["PolicyName"]) for p in policies] == [("alice", "read")]
    env.admin("policy", "delete", "--account", acct.id, "--user", "alice", "--name", "read")
    with pytest.raises(ClientError) as e:
        alice.describe_load_balancers()
    assert error_code(e) == "AccessDenied"

    assert acct.id in {a["AccountId"] for a in env.admin("account", "list")}
    dup = env.admin("account", "create", "--name", acct.name, check=False)
    assert dup.returncode != 0 and "already exists" in dup.stderr
    quotas = {q["Name"]: q["Max"] for q in env.admin("quota", "list", "--account", acct.id)}
    assert quotas["classic-load-balancers"] == 20
    assert {"us-east-1a", "eu-west-1a"} <= {z["ZoneName"] for z in env.admin("zone", "list")}
    assert "subnet-0a1" in {s["SubnetId"] for s in env.admin("subnet", "list")}
    iid = env.instance("us-east-1b")
    listed = {i["InstanceId"]: i for i in env.admin("instance", "list")}
    assert listed[iid]["AvailabilityZone"] == "us-east-1b"
    env.admin("instance", "remove", "--id", iid)
    assert iid not in {i["InstanceId"] for i in env.admin("instance", "list")}
    for bad in (["instance", "add", "--id", "i-0bad", "--address", "not-an-ip", "--zone", "us-east-1a"],
                ["instance", "add", "--id", "i-0bad", "--address", "198.18.0.1", "--zone", "nowhere-1z"],
                ["zone", "add", "--name", "us-east-1a"],
                ["user", "create", "--account", "no-such-account", "--name", "bob"]):
        assert env.admin(*bad, check=False).returncode != 0, bad


def test_two_regions(env):
    server = Server(env.db, env.backend.log_dir, ["--region", "us-east-1", "--region", "eu-west-1"]).start()
    try:
        acct = env.account()
        east = elb_client(server.url, acct.key_id, acct.secret, region="us-east-1")
        west = elb_client(server.url, acct.key_id, acct.secret, region="eu-west-1")
        dns_east = east.create_load_balancer(LoadBalancerName="same", Listeners=[listener()], AvailabilityZones=["us-east-1a"])["DNSName"]
        dns_west = west.create_load_balancer(LoadBalancerName="same", Listeners=[listener()], AvailabilityZones=["eu-west-1a"])["DNSName"]
        assert dns_east == f"same-{acct.id}.lb.us-east-1.elb.local"
        assert dns_west == f"same-{acct.id}.lb.eu-west-1.elb.local"
        assert [d["AvailabilityZones"] for d in west.describe_load_balancers()["LoadBalancerDescriptions"]] == [["eu-west-1a"]]
        west.delete_load_balancer(LoadBalancerName="same")
        assert [d["DNSName"] for d in east.describe_load_balancers()["LoadBalancerDescriptions"]] == [dns_east]
        with pytest.raises(ClientError) as e:
            west.create_load_balancer(LoadBalancerName="x", Listeners=[listener()], AvailabilityZones=["us-east-1a"])
        assert error_code(e) == "ValidationError"
    finally:
        server.stop()


def test_admin_load_balancers_across_accounts(env):
    """`admin lb list|show|delete`: every account's load balancers, found by name and account or
    by DNS name, with the servos that serve them and their instances' health."""
    a, b = env.account(), env.account()
    name_a = make_lb(a.elb, name="shared-name")
    name_b = make_lb(b.elb, name="shared-name")
    iid = env.instance("us-east-1a")
    a.elb.register_instances_with_load_balancer(LoadBalancerName=name_a, Instances=[{"InstanceId": iid}])
    dns_b = b.elb.describe_load_balancers()["LoadBalancerDescriptions"][0]["DNSName"]

    listed = env.admin("lb", "list")
    mine = [(l["AccountId"], l["LoadBalancerName"]) for l in listed if l["AccountId"] in (a.id, b.id)]
    assert sorted(mine) == sorted([(a.id, name_a), (b.id, name_b)])
    only_a = env.admin("lb", "list", "--account", a.name)
    assert [(l["AccountId"], l["Instances"], l["InService"]) for l in only_a] == [(a.id, 1, 0)]
    # Assigned to a live servo of the fleet in its zone.
    deadline = time.time() + 10
    while not env.admin("lb", "show", "--name", name_a, "--account", a.id)["Servos"]:
        assert time.time() < deadline, "no servo assigned"
        time.sleep(0.1)
    shown = env.admin("lb", "show", "--name", name_a, "--account", a.id)
    assert shown["Servos"][0]["Zone"] == "us-east-1a" and shown["Servos"][0]["Live"] is True
    assert [(h["InstanceId"], h["State"]) for h in shown["InstanceHealth"]] == [(iid, "OutOfService")]
    assert shown["InstanceHealth"][0]["Description"] == "Instance registration is still in progress."
    assert shown["Listeners"][0]["LoadBalancerPort"] == 80 and shown["HealthCheck"]["Target"] == "TCP:80"
    by_dns = env.admin("lb", "show", "--dns-name", dns_b.upper() + ".")
    assert (by_dns["AccountId"], by_dns["DNSName"]) == (b.id, dns_b)

    for bad in (["lb", "show", "--name", name_a], ["lb", "show", "--dns-name", "nothing.lb.elb.local"],
                ["lb", "delete", "--name", "no-such-lb", "--account", a.id]):
        assert env.admin(*bad, check=False).returncode != 0, bad
    deleted = env.admin("lb", "delete", "--dns-name", dns_b)
    assert (deleted["Deleted"], deleted["AccountId"]) == (name_b, b.id)
    assert b.elb.describe_load_balancers()["LoadBalancerDescriptions"] == []
    assert [d["LoadBalancerName"] for d in a.elb.describe_load_balancers()["LoadBalancerDescriptions"]] == [name_a]


def test_admin_security_groups(env):
    """Built-in security groups: created, authorized, revoked, listed; load balancers that
    name them carry their rules to the servos."""
    acct = env.account()
    made = env.admin("security-group", "create", "--name", "web", "--description", "web tier")
    group = made["GroupId"]
    assert group.startswith("sg-") and made["VpcId"] is None and made["IngressRules"] == []
    g = env.admin("security-group", "authorize", "--id", group, "--port", "443", "--cidr", "198.18.1.0/24", "--cidr", "10.0.0.0/8")
    assert [(r["IpProtocol"], r["FromPort"], r["ToPort"], r["CidrIp"]) for r in g["IngressRules"]] == [
        ("tcp", 443, 443, "198.18.1.0/24"), ("tcp", 443, 443, "10.0.0.0/8")]
    g = env.admin("security-group", "authorize", "--id", group, "--protocol", "-1", "--cidr", "198.18.9.9/16")
    assert g["IngressRules"][-1] == {"IpProtocol": "-1", "FromPort": None, "ToPort": None, "CidrIp": "198.18.0.0/16"}
    g = env.admin("security-group", "revoke", "--id", group, "--port", "443", "--cidr", "10.0.0.0/8")
    assert [r["CidrIp"] for r in g["IngressRules"]] == ["198.18.1.0/24", "198.18.0.0/16"]
    for bad in (["security-group", "revoke", "--id", group, "--port", "443", "--cidr", "10.0.0.0/8"],
                ["security-group", "authorize", "--id", group, "--cidr", "10.0.0.0/8"],
                ["security-group", "authorize", "--id", group, "--port", "80", "--cidr", "10.0.0.0/33"],
                ["security-group", "authorize", "--id", "sg-0nothere", "--port", "80", "--cidr", "10.0.0.0/8"],
                ["security-group", "create", "--id", "bad-id", "--name", "x"]):
        assert env.admin(*bad, check=False).returncode != 0, bad
    assert group in {x["GroupId"] for x in env.admin("security-group", "list")}
    name = make_lb(acct.elb, SecurityGroups=[group])
    assert acct.elb.describe_load_balancers(LoadBalancerNames=[name])["LoadBalancerDescriptions"][0]["SecurityGroups"] == [group]
    in_use = env.admin("security-group", "delete", "--id", group, check=False)
    assert in_use.returncode != 0 and name in in_use.stderr
    acct.elb.delete_load_balancer(LoadBalancerName=name)
    assert env.admin("security-group", "delete", "--id", group) == {"Deleted": group}
