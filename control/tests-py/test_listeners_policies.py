"""Listeners and policies: CreateLoadBalancerListeners, DeleteLoadBalancerListeners,
SetLoadBalancerListenerSSLCertificate, the policy actions and DescribeLoadBalancerPolicyTypes."""

import pytest
from botocore.exceptions import ClientError

from conftest import error_code, http_status, listener, make_lb


def describe(client, name):
    return client.describe_load_balancers(LoadBalancerNames=[name])["LoadBalancerDescriptions"][0]


def ports(client, name):
    return [x["Listener"]["LoadBalancerPort"] for x in describe(client, name)["ListenerDescriptions"]]


def test_listeners_lifecycle(acct):
    elb = acct.elb
    name = make_lb(elb)
    elb.create_load_balancer_listeners(LoadBalancerName=name, Listeners=[listener("TCP", 9000, 9000)])
    # The identical listener again is a no-op; a different one on the same port is not.
    elb.create_load_balancer_listeners(LoadBalancerName=name, Listeners=[listener("tcp", 9000, 9000)])
    with pytest.raises(elb.exceptions.DuplicateListenerException):
        elb.create_load_balancer_listeners(LoadBalancerName=name, Listeners=[listener("TCP", 9000, 9001)])
    assert ports(elb, name) == [80, 9000]
    elb.delete_load_balancer_listeners(LoadBalancerName=name, LoadBalancerPorts=[9000, 12345])
    assert ports(elb, name) == [80]
    with pytest.raises(elb.exceptions.AccessPointNotFoundException):
        elb.create_load_balancer_listeners(LoadBalancerName="ghost", Listeners=[listener()])
    with pytest.raises(elb.exceptions.AccessPointNotFoundException):
        elb.delete_load_balancer_listeners(LoadBalancerName="ghost", LoadBalancerPorts=[80])


def test_listener_quota(acct, env):
    env.admin("quota", "set", "--account", acct.id, "--name", "classic-listeners", "--value", "2")
    name = make_lb(acct.elb)
    acct.elb.create_load_balancer_listeners(LoadBalancerName=name, Listeners=[listener("TCP", 81, 81)])
    with pytest.raises(ClientError) as e:
        acct.elb.create_load_balancer_listeners(LoadBalancerName=name, Listeners=[listener("TCP", 82, 82)])
    assert error_code(e) == "InvalidConfigurationRequest"
    with pytest.raises(ClientError) as e:
        make_lb(acct.elb, listeners=[listener("TCP", p, p) for p in (1, 2, 3)])
    assert error_code(e) == "InvalidConfigurationRequest"


def test_ssl_certificate(acct):
    elb = acct.elb
    cert1 = acct.certificate("one")
    cert2 = acct.certificate("two")
    name = make_lb(elb, listeners=[listener("HTTPS", 443, 80, "HTTP", cert1), listener("HTTP", 80, 80)])
    elb.set_load_balancer_listener_ssl_certificate(LoadBalancerName=name, LoadBalancerPort=443, SSLCertificateId=cert2)
    assert describe(elb, name)["ListenerDescriptions"][0]["Listener"]["SSLCertificateId"] == cert2
    with pytest.raises(elb.exceptions.ListenerNotFoundException):
        elb.set_load_balancer_listener_ssl_certificate(LoadBalancerName=name, LoadBalancerPort=8443, SSLCertificateId=cert2)
    with pytest.raises(elb.exceptions.InvalidConfigurationRequestException):
        elb.set_load_balancer_listener_ssl_certificate(LoadBalancerName=name, LoadBalancerPort=80, SSLCertificateId=cert2)
    with pytest.raises(elb.exceptions.CertificateNotFoundException):
        elb.set_load_balancer_listener_ssl_certificate(LoadBalancerName=name, LoadBalancerPort=443, SSLCertificateId="arn:aws:iam::111111111111:server-certificate/x")



def test_describe_policy_types_and_samples(acct):
    elb = acct.elb
    types = elb.describe_load_balancer_policy_types()["PolicyTypeDescriptions"]
    assert sorted(t["PolicyTypeName"] for t in types) == sorted([
        "AppCookieStickinessPolicyType", "LBCookieStickinessPolicyType", "SSLNegotiationPolicyType",
        "BackendServerAuthenticationPolicyType", "PublicKeyPolicyType", "ProxyProtocolPolicyType",
    ])
    proxy = elb.describe_load_balancer_policy_types(PolicyTypeNames=["ProxyProtocolPolicyType"])["PolicyTypeDescriptions"]
    assert proxy[0]["PolicyAttributeTypeDescriptions"][0]["AttributeName"] == "ProxyProtocol"
    assert proxy[0]["PolicyAttributeTypeDescriptions"][0]["Cardinality"] == "ONE"
    with pytest.raises(elb.exceptions.PolicyTypeNotFoundException):
        elb.describe_load_balancer_policy_types(PolicyTypeNames=["NoSuchType"])
    samples = elb.describe_load_balancer_policies()["PolicyDescriptions"]
    names = [p["PolicyName"] for p in samples]
    assert "ELBSecurityPolicy-2016-08" in names
    assert any(n.startswith("ELBSample-") for n in names)
    tls12 = elb.describe_load_balancer_policies(PolicyNames=["ELBSecurityPolicy-TLS-1-2-2017-01"])["PolicyDescriptions"][0]
    attrs = {a["AttributeName"]: a["AttributeValue"] for a in tls12["PolicyAttributeDescriptions"]}
    assert attrs["Protocol-TLSv1.2"] == "true" and attrs["Protocol-TLSv1"] == "false"
    with pytest.raises(elb.exceptions.PolicyNotFoundException):
        elb.describe_load_balancer_policies(PolicyNames=["nope"])


def test_stickiness_and_listener_policies(acct):
    elb = acct.elb
    name = make_lb(elb, listeners=[listener("HTTP", 80, 80), listener("TCP", 25, 25)])
    elb.create_app_cookie_stickiness_policy(LoadBalancerName=name, PolicyName="app", CookieName="SESSION")
    elb.create_lb_cookie_stickiness_policy(LoadBalancerName=name, PolicyName="lb", CookieExpirationPeriod=60)
    elb.create_lb_cookie_stickiness_policy(LoadBalancerName=name, PolicyName="lb-browser")
    with pytest.raises(elb.exceptions.DuplicatePolicyNameException):
        elb.create_app_cookie_stickiness_policy(LoadBalancerName=name, PolicyName="app", CookieName="X")
    pol = describe(elb, name)["Policies"]
    assert pol["AppCookieStickinessPolicies"] == [{"PolicyName": "app", "CookieName": "SESSION"}]
    assert pol["LBCookieStickinessPolicies"] == [
        {"PolicyName": "lb", "CookieExpirationPeriod": 60},
        {"PolicyName": "lb-browser"},
    ]
    elb.set_load_balancer_policies_of_listener(LoadBalancerName=name, LoadBalancerPort=80, PolicyNames=["lb"])
    assert describe(elb, name)["ListenerDescriptions"][0]["PolicyNames"] == ["lb"]
    with pytest.raises(elb.exceptions.InvalidConfigurationRequestException):  # two stickiness policies
        elb.set_load_balancer_policies_of_listener(LoadBalancerName=name, LoadBalancerPort=80, PolicyNames=["lb", "app"])
    with pytest.raises(elb.exceptions.InvalidConfigurationRequestException):  # stickiness on TCP
        elb.set_load_balancer_policies_of_listener(LoadBalancerName=name, LoadBalancerPort=25, PolicyNames=["app"])
    with pytest.raises(elb.exceptions.PolicyNotFoundException):
        elb.set_load_balancer_policies_of_listener(LoadBalancerName=name, LoadBalancerPort=80, PolicyNames=["missing"])
    with pytest.raises(elb.exceptions.ListenerNotFoundException):
        elb.set_load_balancer_policies_of_listener(LoadBalancerName=name, LoadBalancerPort=81, PolicyNames=["lb"])
    # In use: cannot be deleted.
    with pytest.raises(elb.exceptions.InvalidConfigurationRequestException):
        elb.delete_load_balancer_policy(LoadBalancerName=name, PolicyName="lb")
    # An empty list clears the listener's policies.
    elb.set_load_balancer_policies_of_listener(LoadBalancerName=name, LoadBalancerPort=80, PolicyNames=[])
    assert describe(elb, name)["ListenerDescriptions"][0]["PolicyNames"] == []
    elb.delete_load_balancer_policy(LoadBalancerName=name, PolicyName="lb")
    names = [p["PolicyName"] for p in elb.describe_load_balancer_policies(LoadBalancerName=name)["PolicyDescriptions"]]
    assert names == ["app", "lb-browser"]


def test_create_policy_proxy_protocol_backend_and_ssl(acct):
    elb = acct.elb
    cert = acct.certificate("c")
    name = make_lb(elb, listeners=[listener("TCP", 80, 8080), listener("SSL", 443, 8443, "SSL", cert)])
    elb.create_load_balancer_policy(
        LoadBalancerName=name, PolicyName="proxy", PolicyTypeName="ProxyProtocolPolicyType",
        PolicyAttributes=[{"AttributeName": "ProxyProtocol", "AttributeValue": "true"}],
    )
    elb.set_load_balancer_policies_for_backend_server(LoadBalancerName=name, InstancePort=8080, PolicyNames=["proxy"])
    d = describe(elb, name)
    assert d["BackendServerDescriptions"] == [{"InstancePort": 8080, "PolicyNames": ["proxy"]}]
    assert d["Policies"]["OtherPolicies"] == ["proxy"]
    with pytest.raises(elb.exceptions.InvalidConfigurationRequestException):  # proxy protocol is not a listener policy
        elb.set_load_balancer_policies_of_listener(LoadBalancerName=name, LoadBalancerPort=80, PolicyNames=["proxy"])
    with pytest.raises(elb.exceptions.InvalidConfigurationRequestException):  # no listener forwards to 9999
        elb.set_load_balancer_policies_for_backend_server(LoadBalancerName=name, InstancePort=9999, PolicyNames=["proxy"])
    elb.set_load_balancer_policies_for_backend_server(LoadBalancerName=name, InstancePort=8080, PolicyNames=[])
    assert describe(elb, name)["BackendServerDescriptions"] == []

    elb.create_load_balancer_policy(
        LoadBalancerName=name, PolicyName="tls", PolicyTypeName="SSLNegotiationPolicyType",
        PolicyAttributes=[{"AttributeName": "Reference-Security-Policy", "AttributeValue": "ELBSecurityPolicy-2016-08"}],
    )
    tls = elb.describe_load_balancer_policies(LoadBalancerName=name, PolicyNames=["tls"])["PolicyDescriptions"][0]
    attrs = {a["AttributeName"]: a["AttributeValue"] for a in tls["PolicyAttributeDescriptions"]}
    assert attrs["Reference-Security-Policy"] == "ELBSecurityPolicy-2016-08" and attrs["Protocol-TLSv1.2"] == "true"
    elb.set_load_balancer_policies_of_listener(LoadBalancerName=name, LoadBalancerPort=443, PolicyNames=["tls"])

    elb.create_load_balancer_policy(
        LoadBalancerName=name, PolicyName="key", PolicyTypeName="PublicKeyPolicyType",
        PolicyAttributes=[{"AttributeName": "PublicKey", "AttributeValue": "MIIBIjANBgkq"}],
    )
    elb.create_load_balancer_policy(
        LoadBalancerName=name, PolicyName="auth", PolicyTypeName="BackendServerAuthenticationPolicyType",
        PolicyAttributes=[{"AttributeName": "PublicKeyPolicyName", "AttributeValue": "key"}],
    )
    elb.set_load_balancer_policies_for_backend_server(LoadBalancerName=name, InstancePort=8443, PolicyNames=["auth"])
    with pytest.raises(elb.exceptions.InvalidConfigurationRequestException):  # backend auth needs a secure back end
        elb.set_load_balancer_policies_for_backend_server(LoadBalancerName=name, InstancePort=8080, PolicyNames=["auth"])
    with pytest.raises(elb.exceptions.InvalidConfigurationRequestException):  # referenced by "auth"
        elb.delete_load_balancer_policy(LoadBalancerName=name, PolicyName="key")


@pytest.mark.parametrize(
    "type_name,attrs,exc",
    [
        ("NoSuchType", [], "PolicyTypeNotFound"),
        ("ProxyProtocolPolicyType", [], "InvalidConfigurationRequest"),
        ("ProxyProtocolPolicyType", [("ProxyProtocol", "maybe")], "InvalidConfigurationRequest"),
        ("ProxyProtocolPolicyType", [("Bogus", "true")], "InvalidConfigurationRequest"),
        ("BackendServerAuthenticationPolicyType", [("PublicKeyPolicyName", "nokey")], "InvalidConfigurationRequest"),
        ("SSLNegotiationPolicyType", [("Reference-Security-Policy", "ELBSecurityPolicy-1999")], "InvalidConfigurationRequest"),
        # What the servos cannot offer is refused, not stored and ignored.
        ("SSLNegotiationPolicyType", [("Protocol-TLSv1.2", "true"), ("AES128-SHA", "true")], "InvalidConfigurationRequest"),
        ("SSLNegotiationPolicyType", [("Protocol-TLSv1", "true"), ("ECDHE-RSA-AES128-GCM-SHA256", "true")], "InvalidConfigurationRequest"),
        ("SSLNegotiationPolicyType", [("Reference-Security-Policy", "ELBSecurityPolicy-2011-08")], "InvalidConfigurationRequest"),
    ],
)
def test_create_policy_errors(acct, type_name, attrs, exc):
    name = make_lb(acct.elb)
    with pytest.raises(ClientError) as e:
        acct.elb.create_load_balancer_policy(
            LoadBalancerName=name, PolicyName="p", PolicyTypeName=type_name,
            PolicyAttributes=[{"AttributeName": a, "AttributeValue": v} for a, v in attrs],
        )
    assert error_code(e) == exc
    if exc == "InvalidConfigurationRequest":
        assert http_status(e) == 409
