"""Instances and health: RegisterInstancesWithLoadBalancer, DeregisterInstancesFromLoadBalancer,
DescribeInstanceHealth, ConfigureHealthCheck, and the built-in inventory."""

import pytest
from botocore.exceptions import ClientError

from conftest import error_code, http_status, listener, make_lb

REGISTERING = "Instance registration is still in progress."


def ids(resp):
    return [i["InstanceId"] for i in resp["Instances"]]


def test_register_deregister_and_health(acct, env):
    elb = acct.elb
    name = make_lb(elb, zones=["us-east-1a", "us-east-1b"])
    a = env.instance("us-east-1a")
    b = env.instance("us-east-1b")
    assert ids(elb.register_instances_with_load_balancer(LoadBalancerName=name, Instances=[{"InstanceId": a}])) == [a]
    # Registering again is harmless; the result lists every registered instance.
    resp = elb.register_instances_with_load_balancer(LoadBalancerName=name, Instances=[{"InstanceId": b}, {"InstanceId": a}])
    assert ids(resp) == [a, b]
    d = elb.describe_load_balancers(LoadBalancerNames=[name])["LoadBalancerDescriptions"][0]
    assert [i["InstanceId"] for i in d["Instances"]] == [a, b]

    states = elb.describe_instance_health(LoadBalancerName=name)["InstanceStates"]
    assert states == [
        {"InstanceId": a, "State": "OutOfService", "ReasonCode": "ELB", "Description": REGISTERING},
        {"InstanceId": b, "State": "OutOfService", "ReasonCode": "ELB", "Description": REGISTERING},
    ]
    # Disabling a zone: its instances are reported as outside the enabled zones.
    elb.disable_availability_zones_for_load_balancer(LoadBalancerName=name, AvailabilityZones=["us-east-1b"])
    only_b = elb.describe_instance_health(LoadBalancerName=name, Instances=[{"InstanceId": b}])["InstanceStates"]
    assert only_b[0]["State"] == "OutOfService"
    assert "Availability Zone" in only_b[0]["Description"]

    assert ids(elb.deregister_instances_from_load_balancer(LoadBalancerName=name, Instances=[{"InstanceId": a}])) == [b]
    # A known instance that is not registered is OutOfService (the InstanceDeregistered waiter's success).
    gone = elb.describe_instance_health(LoadBalancerName=name, Instances=[{"InstanceId": a}])["InstanceStates"][0]
    assert gone["State"] == "OutOfService" and gone["Description"] == "Instance is not currently registered with the LoadBalancer."
    elb.get_waiter("instance_deregistered").wait(LoadBalancerName=name, Instances=[{"InstanceId": a}], WaiterConfig={"Delay": 1, "MaxAttempts": 2})
    with pytest.raises(elb.exceptions.InvalidEndPointException) as e:
        elb.deregister_instances_from_load_balancer(LoadBalancerName=name, Instances=[{"InstanceId": a}])
    assert error_code(e) == "InvalidInstance"


def test_register_errors(acct, env):
    elb = acct.elb
    name = make_lb(elb, zones=["us-east-1a"])
    with pytest.raises(elb.exceptions.InvalidEndPointException) as e:
        elb.register_instances_with_load_balancer(LoadBalancerName=name, Instances=[{"InstanceId": "i-0000dead"}])
    assert error_code(e) == "InvalidInstance"
    with pytest.raises(ClientError) as e:
        elb.register_instances_with_load_balancer(LoadBalancerName=name, Instances=[{"InstanceId": "not-an-id"}])
    assert error_code(e) == "InvalidInstance"
    other_zone = env.instance("us-east-1c")
    with pytest.raises(elb.exceptions.InvalidConfigurationRequestException) as e:
        elb.register_instances_with_load_balancer(LoadBalancerName=name, Instances=[{"InstanceId": other_zone}])
    assert http_status(e) == 409
    # An inventory entry owned by another account is not usable.
    other = env.account()
    theirs = env.instance("us-east-1a", account=other.id)
    with pytest.raises(ClientError) as e:
        elb.register_instances_with_load_balancer(LoadBalancerName=name, Instances=[{"InstanceId": theirs}])
    assert error_code(e) == "InvalidInstance"
    mine = env.instance("us-east-1a", account=acct.id)
    assert ids(elb.register_instances_with_load_balancer(LoadBalancerName=name, Instances=[{"InstanceId": mine}])) == [mine]
    with pytest.raises(elb.exceptions.AccessPointNotFoundException):
        elb.register_instances_with_load_balancer(LoadBalancerName="ghost", Instances=[{"InstanceId": mine}])
    with pytest.raises(ClientError) as e:
        elb.describe_instance_health(LoadBalancerName=name, Instances=[{"InstanceId": "i-0000beef"}])
    assert error_code(e) == "InvalidInstance"
    with pytest.raises(elb.exceptions.AccessPointNotFoundException):
        elb.describe_instance_health(LoadBalancerName="ghost")


def test_configure_health_check(acct):
    elb = acct.elb
    name = make_lb(elb)
    hc = {"Target": "http:8080/health", "Interval": 20, "Timeout": 3, "UnhealthyThreshold": 5, "HealthyThreshold": 4}
    resp = elb.configure_health_check(LoadBalancerName=name, HealthCheck=hc)
    expected = dict(hc, Target="HTTP:8080/health")
    assert resp["HealthCheck"] == expected
    assert elb.describe_load_balancers(LoadBalancerNames=[name])["LoadBalancerDescriptions"][0]["HealthCheck"] == expected


@pytest.mark.parametrize(
    "change",
    [
        {"Timeout": 30, "Interval": 30},  # Timeout must be below Interval
        {"Interval": 4},
        {"Interval": 301},
        {"Timeout": 1},
        {"Timeout": 61, "Interval": 300},
        {"UnhealthyThreshold": 1},
        {"HealthyThreshold": 11},
        {"Target": "HTTP:80"},
        {"Target": "TCP:80/x"},
        {"Target": "UDP:53"},
        {"Target": "TCP:0"},
        {"Target": "TCP:65536"},
    ],
)
def test_health_check_validation(acct, change):
    name = make_lb(acct.elb)
    hc = {"Target": "TCP:80", "Interval": 30, "Timeout": 5, "UnhealthyThreshold": 2, "HealthyThreshold": 10}
    hc.update(change)
    with pytest.raises(ClientError) as e:
        acct.raw.configure_health_check(LoadBalancerName=name, HealthCheck=hc)
    assert error_code(e) == "ValidationError"


def test_instance_quota(acct, env):
    env.admin("quota", "set", "--account", acct.id, "--name", "classic-registered-instances", "--value", "2")
    name = make_lb(acct.elb)
    three = [env.instance() for _ in range(3)]
    acct.elb.register_instances_with_load_balancer(LoadBalancerName=name, Instances=[{"InstanceId": i} for i in three[:2]])
    with pytest.raises(ClientError) as e:
        acct.elb.register_instances_with_load_balancer(LoadBalancerName=name, Instances=[{"InstanceId": three[2]}])
    assert error_code(e) == "InvalidConfigurationRequest"
    assert len(acct.elb.describe_instance_health(LoadBalancerName=name)["InstanceStates"]) == 2
