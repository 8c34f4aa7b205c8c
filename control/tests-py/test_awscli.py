"""The unmodified AWS CLI against the service (`aws elb --endpoint-url ...`)."""

import json

import pytest

from conftest import aws_cli


def aws(env, acct, *args):
    return aws_cli(env, acct, "elb", *args)


def test_aws_cli(env, acct):
    created = aws(env, acct, "create-load-balancer", "--load-balancer-name", "cli-lb",
                  "--listeners", "Protocol=HTTP,LoadBalancerPort=80,InstancePort=8080",
                  "--availability-zones", "us-east-1a")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["DNSName"] == f"cli-lb-{acct.id}.lb.elb.local"
    described = aws(env, acct, "describe-load-balancers", "--load-balancer-names", "cli-lb")
    assert described.returncode == 0, described.stderr
    d = json.loads(described.stdout)["LoadBalancerDescriptions"][0]
    assert d["ListenerDescriptions"][0]["Listener"]["InstancePort"] == 8080
    missing = aws(env, acct, "describe-load-balancers", "--load-balancer-names", "no-such-lb")
    assert missing.returncode != 0
    assert "LoadBalancerNotFound" in missing.stderr
