"""Control-service benchmark: latency of CreateLoadBalancer and DescribeLoadBalancers through
boto3 against a running elb-control. Prints one JSON object.

Usage: control_bench.py --endpoint URL --key ID --secret S --zone Z --count N
"""
import argparse
import json
import statistics
import time

import boto3
from botocore.config import Config


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--secret", required=True)
    ap.add_argument("--zone", required=True)
    ap.add_argument("--count", type=int, default=1000)
    args = ap.parse_args()
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
