"""Authentication (SigV4 header and presigned URL), authorisation (IAM policies), account
isolation, the administrators' `verbose` listing, and region scoping."""

import datetime
import urllib.parse
from unittest import mock

import pytest
import botocore.auth
import botocore.awsrequest
import botocore.credentials
from botocore.exceptions import ClientError

from conftest import elb_client, error_code, http_status, make_lb, send, signed_request, utcnow

DESCRIBE = "Action=DescribeLoadBalancers&Version=2012-06-01"


def test_wrong_secret(env, acct):
    bad = elb_client(env.url, acct.key_id, acct.secret[:-1] + ("A" if acct.secret[-1] != "A" else "B"))
    with pytest.raises(ClientError) as e:
        bad.describe_load_balancers()
    assert error_code(e) == "SignatureDoesNotMatch"
    assert http_status(e) == 403


def test_unknown_key(env):
    bad = elb_client(env.url, "AKIAUNKNOWNUNKNOWN00", "x" * 40)
    with pytest.raises(ClientError) as e:
        bad.describe_load_balancers()
    assert error_code(e) == "InvalidClientTokenId"
    assert http_status(e) == 403


def test_missing_authentication(env):
    status, body = send(env.url + "/", DESCRIBE.encode(), {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 403
    assert "<Code>MissingAuthenticationToken</Code>" in body
    assert "<RequestId>" in body and "<ErrorResponse" in body


def test_expired_and_skewed_dates(env, acct):
    for delta in (datetime.timedelta(minutes=-20), datetime.timedelta(minutes=20)):
        status, body = signed_request(env.url, DESCRIBE, acct.key_id, acct.secret, when=utcnow() + delta)
        assert status == 400, body
        assert "<Code>RequestExpired</Code>" in body
    # Within the allowed skew it works.
    status, body = signed_request(env.url, DESCRIBE, acct.key_id, acct.secret, when=utcnow() - datetime.timedelta(minutes=5))
    assert status == 200, body
    assert "<DescribeLoadBalancersResult>" in body


def test_tampered_body_is_rejected(env, acct):
    req = botocore.awsrequest.AWSRequest(method="POST", url=env.url + "/", data=DESCRIBE.encode(),
                                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(acct.key_id, acct.secret), "elasticloadbalancing", "us-east-1").add_auth(req)
    status, body = send(env.url + "/", b"Action=DeleteLoadBalancer&Version=2012-06-01&LoadBalancerName=x", dict(req.headers.items()))
    assert status == 403 and "SignatureDoesNotMatch" in body


def test_wrong_service_and_unserved_region(env, acct):
    status, body = signed_request(env.url, DESCRIBE, acct.key_id, acct.secret, service="ec2")
    assert status == 403 and "SignatureDoesNotMatch" in body
    other_region = elb_client(env.url, acct.key_id, acct.secret, region="eu-west-1")
    with pytest.raises(ClientError) as e:
        other_region.describe_load_balancers()
    assert error_code(e) == "SignatureDoesNotMatch"
    assert "eu-west-1" in e.value.response["Error"]["Message"] and "us-east-1" in e.value.response["Error"]["Message"]


def test_presigned_url(env, acct):
    name = make_lb(acct.elb)
    url = acct.elb.generate_presigned_url(
        "describe_load_balancers", Params={"LoadBalancerNames": [name]}, ExpiresIn=60, HttpMethod="GET"
    )
    assert "X-Amz-Signature=" in url
    status, body = send(url, None, {}, method="GET")
    assert status == 200, body
    assert f"<LoadBalancerName>{name}</LoadBalancerName>" in body
    # A changed parameter breaks the signature.
    tampered = url.replace(urllib.parse.quote(name), "other")
    status, body = send(tampered, None, {}, method="GET")
    assert status == 403 and "SignatureDoesNotMatch" in body
    # A presigned URL signed two hours ago for 60 seconds has expired.
    two_hours_ago = utcnow() - datetime.timedelta(hours=2)
    with mock.patch("botocore.auth.get_current_datetime", return_value=two_hours_ago):
        stale = acct.elb.generate_presigned_url("describe_load_balancers", Params={}, ExpiresIn=60, HttpMethod="GET")
    assert dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(stale).query))["X-Amz-Date"] == two_hours_ago.strftime("%Y%m%dT%H%M%SZ")
    status, body = send(stale, None, {}, method="GET")
    assert status == 400 and "RequestExpired" in body


def test_account_isolation(env):
    a, b = env.account(), env.account()
    name = make_lb(a.elb, "shared-name")
    # B cannot see or touch A's load balancer: for B it does not exist.
    assert b.elb.describe_load_balancers()["LoadBalancerDescriptions"] == []
    for call in (
        lambda: b.elb.describe_load_balancers(LoadBalancerNames=[name]),
        lambda: b.elb.describe_load_balancer_attributes(LoadBalancerName=name),
        lambda: b.elb.describe_tags(LoadBalancerNames=[name]),
        lambda: b.elb.add_tags(LoadBalancerNames=[name], Tags=[{"Key": "k", "Value": "v"}]),
        lambda: b.elb.describe_instance_health(LoadBalancerName=name),
        lambda: b.elb.create_load_balancer_listeners(LoadBalancerName=name, Listeners=[{"Protocol": "TCP", "LoadBalancerPort": 1, "InstancePort": 1}]),
    ):
        with pytest.raises(ClientError) as e:
            call()
        assert error_code(e) == "LoadBalancerNotFound"
    b.elb.delete_load_balancer(LoadBalancerName=name)  # idempotent no-op for B
    assert a.elb.describe_load_balancers(LoadBalancerNames=[name])["LoadBalancerDescriptions"][0]["LoadBalancerName"] == name
    # The same name is free in B's account, with its own DNS name.
    make_lb(b.elb, "shared-name")
    da = a.elb.describe_load_balancers()["LoadBalancerDescriptions"]
    db = b.elb.describe_load_balancers()["LoadBalancerDescriptions"]
    assert len(da) == len(db) == 1 and da[0]["DNSName"] != db[0]["DNSName"]


def test_user_policies_allow_and_deny(env, acct):
    make_lb(acct.elb, "web-1")
    make_lb(acct.elb, "db-1")
    nothing = acct.user()
    with pytest.raises(ClientError) as e:
        nothing.describe_load_balancers()
    assert error_code(e) == "AccessDenied"
    assert http_status(e) == 403

    reader = acct.user(policy={
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "elasticloadbalancing:Describe*", "Resource": "*"}],
    })
    assert sorted(d["LoadBalancerName"] for d in reader.describe_load_balancers()["LoadBalancerDescriptions"]) == ["db-1", "web-1"]
    with pytest.raises(ClientError) as e:
        reader.delete_load_balancer(LoadBalancerName="web-1")
    assert error_code(e) == "AccessDenied"

    web_admin = acct.user(policy={
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "elasticloadbalancing:*",
             "Resource": f"arn:aws:elasticloadbalancing:us-east-1:{acct.id}:loadbalancer/web-*"},
            {"Effect": "Deny", "Action": "elasticloadbalancing:DeleteLoadBalancer", "Resource": "*"},
        ],
    })
    # Listing shows only what the policy covers.
    assert [d["LoadBalancerName"] for d in web_admin.describe_load_balancers()["LoadBalancerDescriptions"]] == ["web-1"]
    web_admin.add_tags(LoadBalancerNames=["web-1"], Tags=[{"Key": "by", "Value": "user"}])
    make_lb(web_admin, "web-2")
    with pytest.raises(ClientError) as e:
        make_lb(web_admin, "db-2")
    assert error_code(e) == "AccessDenied"
    with pytest.raises(ClientError) as e:
        web_admin.describe_load_balancers(LoadBalancerNames=["db-1"])
    assert error_code(e) == "AccessDenied"
    # Explicit Deny wins over the Allow on web-*.
    with pytest.raises(ClientError) as e:
        web_admin.delete_load_balancer(LoadBalancerName="web-2")
    assert error_code(e) == "AccessDenied"
    assert "web-2" in [d["LoadBalancerName"] for d in acct.elb.describe_load_balancers()["LoadBalancerDescriptions"]]

    # A Deny on every resource refuses the listing outright.
    denied = acct.user(policy={"Statement": [
        {"Effect": "Allow", "Action": "elasticloadbalancing:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "elasticloadbalancing:DescribeLoadBalancers", "Resource": "*"},
    ]})
    with pytest.raises(ClientError) as e:
        denied.describe_load_balancers()
    assert error_code(e) == "AccessDenied"
    assert denied.describe_account_limits()["Limits"]

    bad = env.admin("policy", "put", "--account", acct.id, "--user", "root", "--name", "x", "--document", "{}", check=False)
    assert bad.returncode != 0
    bad = env.admin("policy", "put", "--account", acct.id, "--user", "nobody", "--name", "x",
                    "--document", '{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{}}}', check=False)
    assert bad.returncode != 0 and "Condition" in bad.stderr


def test_verbose_for_administrators(env):
    a, b = env.account(), env.account()
    name_a = make_lb(a.elb)
    name_b = make_lb(b.elb)
    admin = env.account(admin=True)
    own = make_lb(admin.elb)
    listed = admin.elb.describe_load_balancers(LoadBalancerNames=["verbose"])["LoadBalancerDescriptions"]
    names = {d["LoadBalancerName"] for d in listed}
    assert {name_a, name_b, own} <= names
    dns = {d["DNSName"] for d in listed}
    assert f"{name_a}-{a.id}.lb.elb.local" in dns
    # Paging across accounts.
    pages = list(admin.elb.get_paginator("describe_load_balancers").paginate(LoadBalancerNames=["verbose"], PaginationConfig={"PageSize": 1}))
    paged = [d["LoadBalancerName"] for p in pages for d in p["LoadBalancerDescriptions"]]
    assert len(paged) == len(listed) and set(paged) == names
    # Without verbose, administrators see their own; non-administrators' verbose is ignored.
    assert [d["LoadBalancerName"] for d in admin.elb.describe_load_balancers()["LoadBalancerDescriptions"]] == [own]
    assert [d["LoadBalancerName"] for d in a.elb.describe_load_balancers(LoadBalancerNames=["verbose"])["LoadBalancerDescriptions"]] == [name_a]
    # verbose is read-only: an administrator cannot change another account's load balancer.
    admin.elb.delete_load_balancer(LoadBalancerName=name_a)  # deletes nothing in the admin's account
    with pytest.raises(ClientError) as e:
        admin.elb.describe_load_balancers(LoadBalancerNames=[name_a])
    assert error_code(e) == "LoadBalancerNotFound"
    assert a.elb.describe_load_balancers(LoadBalancerNames=[name_a])["LoadBalancerDescriptions"][0]["LoadBalancerName"] == name_a
