"""The wire protocol itself: XML shapes, GET query strings, and malformed input of every kind
(answered with a clean 400 and an ErrorResponse; the server keeps running)."""

import re
import socket
import urllib.parse
import xml.etree.ElementTree as ET

import pytest

from conftest import make_lb, send, signed_request

NS = "{http://elasticloadbalancing.amazonaws.com/doc/2012-06-01/}"


def error_of(body):
    root = ET.fromstring(body)
    assert root.tag == NS + "ErrorResponse"
    err = root.find(NS + "Error")
    rid = root.find(NS + "RequestId").text
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", rid)
    return err.find(NS + "Type").text, err.find(NS + "Code").text, err.find(NS + "Message").text


def test_success_document_shape(env, acct):
    name = make_lb(acct.elb)
    status, body = signed_request(env.url, f"Action=DescribeLoadBalancers&Version=2012-06-01&LoadBalancerNames.member.1={name}", acct.key_id, acct.secret)
    assert status == 200
    root = ET.fromstring(body)
    assert root.tag == NS + "DescribeLoadBalancersResponse"
    result = root.find(NS + "DescribeLoadBalancersResult")
    member = result.find(f"{NS}LoadBalancerDescriptions/{NS}member")
    assert member.find(NS + "LoadBalancerName").text == name
    assert root.find(f"{NS}ResponseMetadata/{NS}RequestId").text
    status, body = signed_request(env.url, f"Action=DeleteLoadBalancer&Version=2012-06-01&LoadBalancerName={name}", acct.key_id, acct.secret)
    assert status == 200
    assert ET.fromstring(body).find(NS + "DeleteLoadBalancerResult") is not None


@pytest.mark.parametrize(
    "body,code",
    [
        ("Version=2012-06-01", "MissingAction"),
        ("Action=DescribeLoadBalancers", "MissingParameter"),
        ("Action=DescribeLoadBalancers&Version=2015-12-01", "NoSuchVersion"),
        ("Action=CreateTargetGroup&Version=2012-06-01", "InvalidAction"),
        ("Action=DeleteLoadBalancer&Version=2012-06-01", "MissingParameter"),
        ("Action=CreateLoadBalancer&Version=2012-06-01&LoadBalancerName=x&AvailabilityZones.member.1=us-east-1a"
         "&Listeners.member.0.Protocol=HTTP&Listeners.member.0.LoadBalancerPort=80&Listeners.member.0.InstancePort=80", "ValidationError"),
        ("Action=CreateLoadBalancer&Version=2012-06-01&LoadBalancerName=x&AvailabilityZones.member.1=us-east-1a"
         "&Listeners.member.99999999.Protocol=HTTP", "ValidationError"),
        ("Action=CreateLoadBalancer&Version=2012-06-01&LoadBalancerName=x&AvailabilityZones.member.01=us-east-1a"
         "&Listeners.member.1.Protocol=HTTP&Listeners.member.1.LoadBalancerPort=80&Listeners.member.1.InstancePort=80", "ValidationError"),
        ("Action=CreateLoadBalancer&Version=2012-06-01&LoadBalancerName=x&AvailabilityZones.member.1=us-east-1a"
         "&Listeners.member.1.Protocol=HTTP&Listeners.member.1.LoadBalancerPort=80&Listeners.member.1.InstancePort=80"
         "&Listeners.member.3.Protocol=HTTP", "ValidationError"),
        ("Action=CreateLoadBalancer&Version=2012-06-01&LoadBalancerName=x&AvailabilityZones.member.1=us-east-1a"
         "&Listeners.member.1.Protocol=HTTP&Listeners.member.1.LoadBalancerPort=99999999999999999999999&Listeners.member.1.InstancePort=80", "ValidationError"),
        ("Action=DescribeLoadBalancers&Version=2012-06-01&PageSize=abc", "ValidationError"),
        ("Action=DescribeLoadBalancers&Version=2012-06-01&Version=2012-06-01", "MalformedQueryString"),
        ("Action=DescribeLoadBalancers&Version=2012-06-01&X=%zz", "MalformedQueryString"),
        ("Action=DescribeLoadBalancers&Version=2012-06-01&X=%ff%fe", "MalformedQueryString"),
    ],
)
def test_bad_requests_get_clean_400(env, acct, body, code):
    status, text = signed_request(env.url, body, acct.key_id, acct.secret)
    assert status == 400, text
    fault, got, message = error_of(text)
    assert (fault, got) == ("Sender", code), message


def test_raw_non_utf8_and_huge_member_counts(env, acct):
    status, text = signed_request(env.url, b"Action=DescribeLoadBalancers&Version=2012-06-01&X=\xff\xfe", acct.key_id, acct.secret)
    assert status == 400 and error_of(text)[1] == "MalformedQueryString"
    many = "&".join(f"LoadBalancerNames.member.{i}=n{i}" for i in range(1, 5001))
    status, text = signed_request(env.url, "Action=DescribeLoadBalancers&Version=2012-06-01&" + many, acct.key_id, acct.secret)
    assert status == 400 and error_of(text)[1] in ("MalformedQueryString", "ValidationError")
    # 1000 members is the most a list may have; all of them unknown -> a clean not found.
    names = "&".join(f"LoadBalancerNames.member.{i}=n{i}" for i in range(1, 1001))
    status, text = signed_request(env.url, "Action=DescribeLoadBalancers&Version=2012-06-01&" + names, acct.key_id, acct.secret)
    assert status == 400 and error_of(text)[1] == "LoadBalancerNotFound"


def test_body_size_is_bounded(env, acct):
    big = "Action=DescribeLoadBalancers&Version=2012-06-01&Pad=" + "a" * (300 * 1024)
    status, text = send(env.url + "/", big.encode(), {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 413
    assert error_of(text)[1] == "RequestEntityTooLarge"
    # Chunked, without a Content-Length: still bounded.
    host, port = env.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n")
        chunk = b"a" * 65536
        try:
            for _ in range(8):
                s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            s.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server may close early
        reply = s.recv(65536)
    assert reply.startswith(b"HTTP/1.1 413")


def test_get_query_string_and_other_methods(env, acct):
    # Unsigned GET: parsed, then refused for lack of authentication.
    status, text = send(env.url + "/?Action=DescribeLoadBalancers&Version=2012-06-01", None, {}, method="GET")
    assert status == 403 and error_of(text)[1] == "MissingAuthenticationToken"
    status, text = send(env.url + "/?A=%zz", None, {}, method="GET")
    assert status == 400 and error_of(text)[1] == "MalformedQueryString"
    status, text = send(env.url + "/", None, {}, method="DELETE")
    assert status == 405
    status, text = send(env.url + "/nope", None, {}, method="GET")
    assert status == 404
    # Still serving.
    assert acct.elb.describe_load_balancers()["LoadBalancerDescriptions"] == []


def test_garbage_http_does_not_crash_the_server(env, acct):
    host, port = env.url.removeprefix("http://").split(":")
    for junk in (b"\x00\x01\x02\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n"):
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(junk)
            try:
                s.recv(4096)
            except OSError:
                pass
    assert env.server.proc.poll() is None
    assert acct.elb.describe_load_balancers()["LoadBalancerDescriptions"] == []


def test_request_id_in_log_line(env, acct):
    resp = acct.elb.describe_account_limits()
    rid = resp["ResponseMetadata"]["RequestId"]
    import time
    for _ in range(50):
        log = env.server.log_text()
        if rid in log:
            break
        time.sleep(0.1)
    line = next(l for l in log.splitlines() if rid in l)
    # Plain text (no colour codes), so `grep request_id=<id>` finds it.
    assert f"request_id={rid}" in line
    assert "DescribeAccountLimits" in line and acct.id in line
