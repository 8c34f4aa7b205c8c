"""Durability and concurrency: restarts and kill -9 lose nothing committed; 32 clients creating
and deleting in parallel leave consistent state; two servers share one database."""

import random
import signal
import threading
import uuid

import pytest
from botocore.exceptions import ClientError

from conftest import Account, Env, Server, elb_client, error_code, listener, make_lb, seed_inventory


def fresh_env(env):
    db = env.backend.new_db()
    seed_inventory(db)
    return db


def names_of(client):
    pages = client.get_paginator("describe_load_balancers").paginate(PaginationConfig={"PageSize": 50})
    return [d["LoadBalancerName"] for p in pages for d in p["LoadBalancerDescriptions"]]


def test_restart_and_kill_9_lose_nothing(env):
    db = fresh_env(env)
    s1 = Server(db, env.backend.log_dir).start()
    e1 = Env(env.backend, db, s1)
    acct = e1.account()
    inst = e1.instance("us-east-1a")
    for i in range(5):
        make_lb(acct.elb, f"keep-{i}", Tags=[{"Key": "i", "Value": str(i)}])
    acct.elb.register_instances_with_load_balancer(LoadBalancerName="keep-0", Instances=[{"InstanceId": inst}])
    acct.elb.configure_health_check(LoadBalancerName="keep-1", HealthCheck={
        "Target": "HTTP:80/ping", "Interval": 10, "Timeout": 4, "UnhealthyThreshold": 3, "HealthyThreshold": 3})
    assert s1.stop(signal.SIGTERM) == 0, s1.log_text()[-2000:]
    assert "SIGTERM received" in s1.log_text()

    s2 = Server(db, env.backend.log_dir).start()
    c2 = elb_client(s2.url, acct.key_id, acct.secret)
    assert names_of(c2) == [f"keep-{i}" for i in range(5)]
    d0 = c2.describe_load_balancers(LoadBalancerNames=["keep-0"])["LoadBalancerDescriptions"][0]
    assert d0["Instances"] == [{"InstanceId": inst}]
    assert c2.describe_load_balancers(LoadBalancerNames=["keep-1"])["LoadBalancerDescriptions"][0]["HealthCheck"]["Target"] == "HTTP:80/ping"
    for i in range(5, 10):
        make_lb(c2, f"keep-{i}")
    c2.add_tags(LoadBalancerNames=["keep-9"], Tags=[{"Key": "last", "Value": "write"}])
    # kill -9 right after the last acknowledged write.
    s2.stop(signal.SIGKILL)

    s3 = Server(db, env.backend.log_dir).start()
    c3 = elb_client(s3.url, acct.key_id, acct.secret)
    assert names_of(c3) == [f"keep-{i}" for i in range(10)]
    assert c3.describe_tags(LoadBalancerNames=["keep-9"])["TagDescriptions"][0]["Tags"] == [{"Key": "last", "Value": "write"}]
    assert c3.describe_tags(LoadBalancerNames=["keep-3"])["TagDescriptions"][0]["Tags"] == [{"Key": "i", "Value": "3"}]
    assert s3.stop(signal.SIGINT) == 0
    assert "SIGINT received" in s3.log_text()


def test_32_clients_create_and_delete_in_parallel(env):
    acct = env.account()
    env.admin("quota", "set", "--account", acct.id, "--name", "classic-load-balancers", "--value", "100")
    names = [f"race-{i:02d}" for i in range(16)]
    barrier = threading.Barrier(32)
    created, failures = [], []
    lock = threading.Lock()

    def worker(seed):
        client = elb_client(env.url, acct.key_id, acct.secret)
        rnd = random.Random(seed)
        order = names[:]
        rnd.shuffle(order)
        try:
            barrier.wait(60)
            for n in order:
                try:
                    make_lb(client, n, listeners=[listener("TCP", 80, 80)])
                    with lock:
                        created.append(n)
                except ClientError as e:
                    if e.response["Error"]["Code"] != "DuplicateLoadBalancerName":
                        raise
            barrier.wait(60)
            for _ in range(4):
                victim = rnd.choice(names[:8])
                client.delete_load_balancer(LoadBalancerName=victim)
                try:
                    make_lb(client, rnd.choice(names[:8]), listeners=[listener("TCP", 80, 80)])
                except ClientError as e:
                    if e.response["Error"]["Code"] != "DuplicateLoadBalancerName":
                        raise
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            with lock:
                failures.append(repr(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert failures == []
    # Phase one: every name was created exactly once.
    assert sorted(created) == names
    final = names_of(acct.elb)
    assert len(final) == len(set(final)), "duplicate names"
    assert set(names[8:]) <= set(final) <= set(names)
    for d in acct.elb.describe_load_balancers(LoadBalancerNames=final)["LoadBalancerDescriptions"]:
        assert [x["Listener"]["LoadBalancerPort"] for x in d["ListenerDescriptions"]] == [80]
    limits = {l["Name"]: l["Max"] for l in acct.elb.describe_account_limits()["Limits"]}
    assert limits["classic-load-balancers"] == "100"


def test_two_servers_share_one_database(env):
    second = Server(env.db, env.backend.log_dir).start()
    try:
        acct = env.account()
        other = elb_client(second.url, acct.key_id, acct.secret)
        name = make_lb(acct.elb)
        assert [d["LoadBalancerName"] for d in other.describe_load_balancers()["LoadBalancerDescriptions"]] == [name]
        other.add_tags(LoadBalancerNames=[name], Tags=[{"Key": "via", "Value": "second"}])
        assert acct.elb.describe_tags(LoadBalancerNames=[name])["TagDescriptions"][0]["Tags"] == [{"Key": "via", "Value": "second"}]
        with pytest.raises(other.exceptions.DuplicateAccessPointNameException):
            make_lb(other, name)
    finally:
        second.stop()
