"""Server certificates through control's IAM actions (2010-05-08): the unmodified AWS CLI and
boto3's IAM client upload, get, list and delete them; HTTPS/SSL listeners accept only the ARNs
of certificates that exist; keys are sealed at rest and never returned."""

import json
import sqlite3
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from conftest import aws_cli, error_code, http_status, iam_client, listener, make_certificate, make_lb


def aws_iam(env, acct, *args):
    return aws_cli(env, acct, "iam", *args)


def test_awscli_upload_get_list_delete(env, acct, tmp_path):
    body, key = make_certificate("www.example.test", key_type="rsa")
    chain, _ = make_certificate("intermediate.example.test")
    (tmp_path / "cert.pem").write_text(body)
    (tmp_path / "key.pem").write_text(key)
    (tmp_path / "chain.pem").write_text(chain)
    up = aws_iam(env, acct, "upload-server-certificate", "--server-certificate-name", "site",
                 "--path", "/web/", "--certificate-body", f"file://{tmp_path / 'cert.pem'}",
                 "--private-key", f"file://{tmp_path / 'key.pem'}",
                 "--certificate-chain", f"file://{tmp_path / 'chain.pem'}")
    assert up.returncode == 0, up.stderr
    meta = json.loads(up.stdout)["ServerCertificateMetadata"]
    assert meta["Arn"] == f"arn:aws:iam::{acct.id}:server-certificate/web/site"
    assert meta["Path"] == "/web/" and meta["ServerCertificateName"] == "site"
    assert meta["ServerCertificateId"].startswith("ASCA") and len(meta["ServerCertificateId"]) == 21
    assert "Expiration" in meta and "UploadDate" in meta

    got = aws_iam(env, acct, "get-server-certificate", "--server-certificate-name", "site")
    assert got.returncode == 0, got.stderr
    cert = json.loads(got.stdout)["ServerCertificate"]
    assert cert["CertificateBody"].strip() == body.strip()
    assert cert["CertificateChain"].strip() == chain.strip()
    assert "PRIVATE KEY" not in got.stdout, "the private key must never be returned"

    listed = aws_iam(env, acct, "list-server-certificates", "--path-prefix", "/web/")
    assert listed.returncode == 0, listed.stderr
    assert [m["ServerCertificateName"] for m in json.loads(listed.stdout)["ServerCertificateMetadataList"]] == ["site"]
    none = aws_iam(env, acct, "list-server-certificates", "--path-prefix", "/other/")
    assert json.loads(none.stdout)["ServerCertificateMetadataList"] == []

    # The ARN works in a listener; the certificate cannot be deleted while the listener uses it.
    name = make_lb(acct.elb, listeners=[listener("HTTPS", 443, 80, "HTTP", meta["Arn"])])
    busy = aws_iam(env, acct, "delete-server-certificate", "--server-certificate-name", "site")
    assert busy.returncode != 0 and "DeleteConflict" in busy.stderr, busy.stderr
    assert f"loadbalancer/{name}" in busy.stderr
    acct.elb.delete_load_balancer(LoadBalancerName=name)
    gone = aws_iam(env, acct, "delete-server-certificate", "--server-certificate-name", "site")
    assert gone.returncode == 0, gone.stderr
    missing = aws_iam(env, acct, "get-server-certificate", "--server-certificate-name", "site")
    assert missing.returncode != 0 and "NoSuchEntity" in missing.stderr


def test_upload_errors(env, acct):
    iam = acct.iam
    body, key = make_certificate("a.example.test")
    other_body, other_key = make_certificate("b.example.test")
    iam.upload_server_certificate(ServerCertificateName="Dup", CertificateBody=body, PrivateKey=key)
    with pytest.raises(ClientError) as e:  # names are unique without regard to case
        iam.upload_server_certificate(ServerCertificateName="dup", CertificateBody=body, PrivateKey=key)
    assert error_code(e) == "EntityAlreadyExists" and http_status(e) == 409
    with pytest.raises(ClientError) as e:
        iam.upload_server_certificate(ServerCertificateName="mismatch", CertificateBody=body, PrivateKey=other_key)
    assert error_code(e) == "KeyPairMismatch"
    for bad_body, bad_key in [("not a certificate", key), (body, "not a key"), (body + other_body, key),
                              (body.replace("MII", "MIX", 1), key)]:
        with pytest.raises(ClientError) as e:
            iam.upload_server_certificate(ServerCertificateName="bad", CertificateBody=bad_body, PrivateKey=bad_key)
        assert error_code(e) == "MalformedCertificate", (bad_body[:40], bad_key[:40])
    # (An expired certificate is refused too: control/src/certs/check.rs tests it; openssl 3.0
    # cannot make one.)
    raw = iam_client(env.url, acct.key_id, acct.secret, validate=False)
    for bad_name in ["has space", "x" * 129]:
        with pytest.raises(ClientError) as e:
            raw.upload_server_certificate(ServerCertificateName=bad_name, CertificateBody=body, PrivateKey=key)
        assert error_code(e) == "ValidationError"
    with pytest.raises(ClientError) as e:
        raw.upload_server_certificate(ServerCertificateName="p", Path="no-slash", CertificateBody=body, PrivateKey=key)
    assert error_code(e) == "ValidationError"
    with pytest.raises(ClientError) as e:
        iam.delete_server_certificate(ServerCertificateName="never")
    assert error_code(e) == "NoSuchEntity" and http_status(e) == 404
    # Nothing of the refused uploads was stored.
    names = [m["ServerCertificateName"] for m in iam.list_server_certificates()["ServerCertificateMetadataList"]]
    assert names == ["Dup"]


def test_listing_pages_and_accounts_are_separate(env, acct):
    for i in range(5):
        acct.certificate(f"c{i}")
    other = env.account()
    other.certificate("theirs")
    first = acct.iam.list_server_certificates(MaxItems=2)
    assert [m["ServerCertificateName"] for m in first["ServerCertificateMetadataList"]] == ["c0", "c1"]
    assert first["IsTruncated"] is True
    rest = acct.iam.list_server_certificates(MaxItems=10, Marker=first["Marker"])
    assert [m["ServerCertificateName"] for m in rest["ServerCertificateMetadataList"]] == ["c2", "c3", "c4"]
    assert rest["IsTruncated"] is False
    with pytest.raises(ClientError) as e:
        acct.iam.get_server_certificate(ServerCertificateName="theirs")
    assert error_code(e) == "NoSuchEntity"


def test_set_listener_certificate(env, acct):
    first, second = acct.certificate(), acct.certificate()
    name = make_lb(acct.elb, listeners=[listener("SSL", 465, 25, "TCP", first)])
    acct.elb.set_load_balancer_listener_ssl_certificate(LoadBalancerName=name, LoadBalancerPort=465, SSLCertificateId=second)
    l = acct.elb.describe_load_balancers(LoadBalancerNames=[name])["LoadBalancerDescriptions"][0]["ListenerDescriptions"][0]
    assert l["Listener"]["SSLCertificateId"] == second
    with pytest.raises(ClientError) as e:
        acct.elb.set_load_balancer_listener_ssl_certificate(
            LoadBalancerName=name, LoadBalancerPort=465,
            SSLCertificateId=f"arn:aws:iam::{acct.id}:server-certificate/not-there")
    assert error_code(e) == "CertificateNotFound"
    # The first one is free again; the second is in use.
    acct.iam.delete_server_certificate(ServerCertificateName=first.rsplit("/", 1)[1])
    with pytest.raises(ClientError) as e:
        acct.iam.delete_server_certificate(ServerCertificateName=second.rsplit("/", 1)[1])
    assert error_code(e) == "DeleteConflict"


def test_iam_policies_apply(env, acct):
    body, key = make_certificate("u.example.test")
    elb_only = acct.env.admin("user", "create", "--account", acct.id, "--name", "elbonly")
    acct.env.admin("policy", "put", "--account", acct.id, "--user", "elbonly", "--name", "p",
                   "--document", json.dumps({"Statement": [{"Effect": "Allow", "Action": "elasticloadbalancing:*", "Resource": "*"}]}))
    client = iam_client(env.url, elb_only["AccessKeyId"], elb_only["SecretAccessKey"])
    with pytest.raises(ClientError) as e:
        client.upload_server_certificate(ServerCertificateName="u", CertificateBody=body, PrivateKey=key)
    assert error_code(e) == "AccessDenied"
    with pytest.raises(ClientError) as e:
        client.list_server_certificates()
    assert error_code(e) == "AccessDenied"
    certs = acct.env.admin("user", "create", "--account", acct.id, "--name", "certs")
    acct.env.admin("policy", "put", "--account", acct.id, "--user", "certs", "--name", "p",
                   "--document", json.dumps({"Statement": [
                       {"Effect": "Allow", "Action": ["iam:UploadServerCertificate", "iam:ListServerCertificates"], "Resource": "*"},
                       {"Effect": "Deny", "Action": "iam:*", "Resource": "*:server-certificate/secret*"}]}))
    client = iam_client(env.url, certs["AccessKeyId"], certs["SecretAccessKey"])
    client.upload_server_certificate(ServerCertificateName="u", CertificateBody=body, PrivateKey=key)
    with pytest.raises(ClientError) as e:
        client.upload_server_certificate(ServerCertificateName="secret1", CertificateBody=body, PrivateKey=key)
    assert error_code(e) == "AccessDenied"
    with pytest.raises(ClientError) as e:
        client.delete_server_certificate(ServerCertificateName="u")
    assert error_code(e) == "AccessDenied"
    assert [m["ServerCertificateName"] for m in client.list_server_certificates()["ServerCertificateMetadataList"]] == ["u"]


def test_wrong_service_version_and_action(env, acct):
    from conftest import signed_request
    status, text = signed_request(env.url, "Action=ListServerCertificates&Version=2012-06-01", acct.key_id, acct.secret, service="iam")
    assert status == 400 and "NoSuchVersion" in text
    status, text = signed_request(env.url, "Action=CreateUser&Version=2010-05-08", acct.key_id, acct.secret, service="iam")
    assert status == 400 and "InvalidAction" in text
    status, text = signed_request(env.url, "Action=ListServerCertificates&Version=2010-05-08", acct.key_id, acct.secret, service="s3")
    assert status == 403 and "SignatureDoesNotMatch" in text


def test_private_keys_are_sealed_at_rest(env, acct):
    if env.backend.kind != "sqlite":
        pytest.skip("reads the SQLite file directly; the PostgreSQL run checks the same code path through the API")
    body, key = make_certificate("sealed.example.test")
    acct.iam.upload_server_certificate(ServerCertificateName="sealed", CertificateBody=body, PrivateKey=key)
    path = env.db.removeprefix("sqlite:")
    key_file = Path(path + ".key")
    assert key_file.exists() and (key_file.stat().st_mode & 0o777) == 0o600
    # The WAL may still hold the newest pages: read through SQLite itself.
    with sqlite3.connect(path) as db:
        (sealed,) = db.execute("SELECT sealed_key FROM server_certificates WHERE name = 'sealed'").fetchone()
    secret_line = [l for l in key.splitlines() if l and not l.startswith("-----")][0]
    assert sealed.startswith("v1:") and "PRIVATE KEY" not in sealed and secret_line not in sealed
    with open(path, "rb") as f:
        assert secret_line.encode() not in f.read()
