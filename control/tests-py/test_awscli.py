"""The unmodified AWS CLI against the service (`aws elb --endpoint-url ...`)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

AWS = Path(sys.executable).parent / "aws"


def aws(env, acct, *args):
    environ = dict(
        os.environ,
        AWS_ACCESS_KEY_ID=acct.key_id,
        AWS_SECRET_ACCESS_KEY=acct.secret,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
    )
    return subprocess.run([str(AWS), "elb", "--endpoint-url", env.url, "--output", "json", *args],
                          capture_output=True, text=True, env=environ, timeout=120)


def test_aws_cli(env, acct):
    if not AWS.exists():
        pytest.fail(f"awscli not installed in the test venv ({AWS}): pip install -r control/tests-py/requirements.txt")
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
