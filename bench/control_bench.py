"""Control-service benchmark: latency of CreateLoadBalancer and DescribeLoadBalancers through
boto3 against a running elb-control. Prints one JSON object.

Usage: control_bench.py --endpoint URL --key ID --secret S --zone Z --count N [--servos FILE]

FILE lists servo credentials (`elb-control admin servo create` outputs): each registers with
250 addresses and heart-beats while the benchmark runs, since control creates load balancers
only where a live servo can serve them.
"""
import argparse
import json
import statistics
import threading
import time
import urllib.request

import boto3
from botocore.config import Config


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def servo_post(endpoint, creds, path, body):
    request = urllib.request.Request(
        f"{endpoint}/servo/v1/{path}", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {creds['ServoId']}:{creds['Secret']}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return resp.status


def keep_servos_live(endpoint, servos):
    for n, creds in enumerate(servos):
        servo_post(endpoint, creds, "register", {
            "ServoId": creds["ServoId"], "Zone": creds["Zone"],
            "PublicAddresses": [f"198.18.{100 + n}.{h}" for h in range(1, 251)],
        })

    def beat():
        while True:
            time.sleep(1)
            for creds in servos:
                try:
                    servo_post(endpoint, creds, "heartbeat", {"ServoId": creds["ServoId"]})
                except Exception:  # noqa: BLE001 - the server stops at the end
                    pass

    threading.Thread(target=beat, daemon=True).start()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--secret", required=True)
    ap.add_argument("--zone", required=True)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--servos")
    args = ap.parse_args()
    if args.servos:
        with open(args.servos) as f:
            keep_servos_live(args.endpoint, json.load(f))
    elb = boto3.client(
        "elb",
        endpoint_url=args.endpoint,
        region_name="us-east-1",
        aws_access_key_id=args.key,
        aws_secret_access_key=args.secret,
        config=Config(retries={"max_attempts": 1}),
    )
    create, describe = [], []
    names = [f"bench-{i:05d}" for i in range(args.count)]
    for name in names:
        t = time.perf_counter()
        elb.create_load_balancer(
            LoadBalancerName=name,
            Listeners=[{"Protocol": "TCP", "LoadBalancerPort": 80, "InstancePort": 8080}],
            AvailabilityZones=[args.zone],
        )
        create.append((time.perf_counter() - t) * 1e3)
    for name in names:
        t = time.perf_counter()
        r = elb.describe_load_balancers(LoadBalancerNames=[name])
        describe.append((time.perf_counter() - t) * 1e3)
        assert r["LoadBalancerDescriptions"][0]["LoadBalancerName"] == name
    t = time.perf_counter()
    pages = sum(1 for _ in elb.get_paginator("describe_load_balancers").paginate())
    describe_all_ms = (time.perf_counter() - t) * 1e3
    print(json.dumps({
        "count": args.count,
        "create_p50_ms": statistics.median(create),
        "create_p99_ms": pct(create, 99),
        "describe_p50_ms": statistics.median(describe),
        "describe_p99_ms": pct(describe, 99),
        "describe_all_ms": describe_all_ms,
        "describe_all_pages": pages,
    }))


if __name__ == "__main__":
    main()
