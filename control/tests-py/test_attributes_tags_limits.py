"""DescribeLoadBalancerAttributes / ModifyLoadBalancerAttributes, AddTags / RemoveTags /
DescribeTags, DescribeAccountLimits and the admin-set quotas."""

import pytest
from botocore.exceptions import ClientError

from conftest import error_code, make_lb


# What AWS returns for a new load balancer (botocore's example for the action, and AWS today:
# a disabled access log is {Enabled: false} alone).
NEW_LB_ATTRIBUTES = {
    "CrossZoneLoadBalancing": {"Enabled": False},
    "AccessLog": {"Enabled": False},
    "ConnectionDraining": {"Enabled": False, "Timeout": 300},
    "ConnectionSettings": {"IdleTimeout": 60},
    "AdditionalAttributes": [{"Key": "elb.http.desyncmitigationmode", "Value": "defensive"}],
}


def test_new_load_balancer_attributes_as_aws_shapes_them(acct):
    name = make_lb(acct.elb)
    attrs = acct.elb.describe_load_balancer_attributes(LoadBalancerName=name)["LoadBalancerAttributes"]
    assert attrs == NEW_LB_ATTRIBUTES
    # Access logs cannot be delivered by this server (no --s3-endpoint), and the default
    # listener is one the XDP program forwards: refused, with a message, and nothing stored.
    with pytest.raises(ClientError) as e:
        acct.raw.modify_load_balancer_attributes(LoadBalancerName=name, LoadBalancerAttributes={
            "AccessLog": {"Enabled": True, "S3BucketName": "logs-bucket", "EmitInterval": 5}})
    assert error_code(e) == "InvalidConfigurationRequest"
    assert e.value.response["Error"]["Message"]
    attrs = acct.elb.describe_load_balancer_attributes(LoadBalancerName=name)["LoadBalancerAttributes"]
    assert attrs["AccessLog"] == {"Enabled": False}


def test_modify_attributes(acct):
    elb = acct.elb
    name = make_lb(elb)
    resp = elb.modify_load_balancer_attributes(
        LoadBalancerName=name,
        LoadBalancerAttributes={
            "CrossZoneLoadBalancing": {"Enabled": True},
            "ConnectionDraining": {"Enabled": True, "Timeout": 120},
            "ConnectionSettings": {"IdleTimeout": 300},
            "AdditionalAttributes": [{"Key": "elb.http.desyncmitigationmode", "Value": "defensive"}],
        },
    )
    assert resp["LoadBalancerName"] == name
    attrs = elb.describe_load_balancer_attributes(LoadBalancerName=name)["LoadBalancerAttributes"]
    assert attrs == resp["LoadBalancerAttributes"]
    assert attrs["CrossZoneLoadBalancing"] == {"Enabled": True}
    assert attrs["ConnectionDraining"] == {"Enabled": True, "Timeout": 120}
    assert attrs["ConnectionSettings"] == {"IdleTimeout": 300}
    assert attrs["AccessLog"] == {"Enabled": False}
    assert attrs["AdditionalAttributes"] == [{"Key": "elb.http.desyncmitigationmode", "Value": "defensive"}]
    # A partial modify leaves the rest alone.
    elb.modify_load_balancer_attributes(LoadBalancerName=name, LoadBalancerAttributes={"CrossZoneLoadBalancing": {"Enabled": False}})
    attrs = elb.describe_load_balancer_attributes(LoadBalancerName=name)["LoadBalancerAttributes"]
    assert attrs["CrossZoneLoadBalancing"] == {"Enabled": False}
    assert attrs["ConnectionSettings"] == {"IdleTimeout": 300}


@pytest.mark.parametrize(
    "attrs,code",
    [
        ({"ConnectionSettings": {"IdleTimeout": 0}}, "ValidationError"),
        ({"ConnectionSettings": {"IdleTimeout": 3601}}, "ValidationError"),
        ({"ConnectionDraining": {"Enabled": True, "Timeout": 0}}, "ValidationError"),
        ({"AccessLog": {"Enabled": True}}, "InvalidConfigurationRequest"),
        ({"AccessLog": {"Enabled": False, "EmitInterval": 30}}, "ValidationError"),
        ({"AdditionalAttributes": [{"Key": "no.such.attribute", "Value": "x"}]}, "LoadBalancerAttributeNotFound"),
        ({"AdditionalAttributes": [{"Key": "elb.http.desyncmitigationmode", "Value": "reckless"}]}, "ValidationError"),
        # Valid for AWS, not honoured by this service's servos: refused, never stored and ignored.
        ({"AdditionalAttributes": [{"Key": "elb.http.desyncmitigationmode", "Value": "monitor"}]}, "InvalidConfigurationRequest"),
        ({"AdditionalAttributes": [{"Key": "elb.http.desyncmitigationmode", "Value": "strictest"}]}, "InvalidConfigurationRequest"),
    ],
)
def test_modify_attributes_errors(acct, attrs, code):
    name = make_lb(acct.elb)
    with pytest.raises(ClientError) as e:
        acct.raw.modify_load_balancer_attributes(LoadBalancerName=name, LoadBalancerAttributes=attrs)
    assert error_code(e) == code


def test_attributes_of_missing_lb(acct):
    with pytest.raises(acct.elb.exceptions.AccessPointNotFoundException):
        acct.elb.describe_load_balancer_attributes(LoadBalancerName="ghost")
    with pytest.raises(acct.elb.exceptions.AccessPointNotFoundException):
        acct.elb.modify_load_balancer_attributes(LoadBalancerName="ghost", LoadBalancerAttributes={"CrossZoneLoadBalancing": {"Enabled": True}})


def tags_of(elb, name):
    return elb.describe_tags(LoadBalancerNames=[name])["TagDescriptions"][0]["Tags"]


def test_tags(acct):
    elb = acct.elb
    a = make_lb(elb)
    b = make_lb(elb, Tags=[{"Key": "team", "Value": "b"}])
    elb.add_tags(LoadBalancerNames=[a], Tags=[{"Key": "env", "Value": "dev"}, {"Key": "owner", "Value": "ops"}])
    elb.add_tags(LoadBalancerNames=[a], Tags=[{"Key": "env", "Value": "prod"}])  # overwrite
    assert tags_of(elb, a) == [{"Key": "env", "Value": "prod"}, {"Key": "owner", "Value": "ops"}]
    both = elb.describe_tags(LoadBalancerNames=[a, b])["TagDescriptions"]
    assert [t["LoadBalancerName"] for t in both] == [a, b]
    assert both[1]["Tags"] == [{"Key": "team", "Value": "b"}]
    elb.remove_tags(LoadBalancerNames=[a], Tags=[{"Key": "owner"}, {"Key": "absent"}])
    assert tags_of(elb, a) == [{"Key": "env", "Value": "prod"}]
    with pytest.raises(elb.exceptions.DuplicateTagKeysException):
        elb.add_tags(LoadBalancerNames=[a], Tags=[{"Key": "k", "Value": "1"}, {"Key": "k", "Value": "2"}])
    with pytest.raises(ClientError) as e:
        elb.add_tags(LoadBalancerNames=[a, b], Tags=[{"Key": "k", "Value": "1"}])
    assert error_code(e) == "ValidationError"
    for bad in ({"Key": "aws:reserved", "Value": "x"}, {"Key": "bad*key", "Value": "x"}, {"Key": "k", "Value": "v" * 257}):
        with pytest.raises(ClientError) as e:
            acct.raw.add_tags(LoadBalancerNames=[a], Tags=[bad])
        assert error_code(e) == "ValidationError"
    with pytest.raises(elb.exceptions.AccessPointNotFoundException):
        elb.add_tags(LoadBalancerNames=["ghost"], Tags=[{"Key": "k", "Value": "v"}])
    with pytest.raises(elb.exceptions.AccessPointNotFoundException):
        elb.describe_tags(LoadBalancerNames=[a, "ghost"])


def test_tag_quota(acct, env):
    elb = acct.elb
    name = make_lb(elb)
    elb.add_tags(LoadBalancerNames=[name], Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(10)])
    with pytest.raises(elb.exceptions.TooManyTagsException):
        elb.add_tags(LoadBalancerNames=[name], Tags=[{"Key": "k10", "Value": "v"}])
    with pytest.raises(elb.exceptions.TooManyTagsException):
        make_lb(elb, Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(11)])
    env.admin("quota", "set", "--account", acct.id, "--name", "classic-tags-per-load-balancer", "--value", "12")
    elb.add_tags(LoadBalancerNames=[name], Tags=[{"Key": "k10", "Value": "v"}])
    assert len(tags_of(elb, name)) == 11


def test_account_limits_defaults_paging_and_quota_changes(acct, env):
    elb = acct.elb
    limits = {l["Name"]: l["Max"] for l in elb.describe_account_limits()["Limits"]}
    assert limits == {
        "classic-load-balancers": "20",
        "classic-listeners": "100",
        "classic-registered-instances": "1000",
        "classic-tags-per-load-balancer": "10",
    }
    pages = list(elb.get_paginator("describe_account_limits").paginate(PaginationConfig={"PageSize": 3}))
    assert [len(p["Limits"]) for p in pages] == [3, 1]
    env.admin("quota", "set", "--account", acct.id, "--name", "classic-load-balancers", "--value", "2")
    limits = {l["Name"]: l["Max"] for l in elb.describe_account_limits()["Limits"]}
    assert limits["classic-load-balancers"] == "2"
    make_lb(elb)
    make_lb(elb)
    with pytest.raises(elb.exceptions.TooManyAccessPointsException) as e:
        make_lb(elb)
    assert error_code(e) == "TooManyLoadBalancers"
    # Another account is unaffected by this account's quota.
    other = env.account()
    assert {l["Name"]: l["Max"] for l in other.elb.describe_account_limits()["Limits"]}["classic-load-balancers"] == "20"
    bad = env.admin("quota", "set", "--account", acct.id, "--name", "classic-bogus", "--value", "1", check=False)
    assert bad.returncode != 0 and "unknown quota" in bad.stderr
