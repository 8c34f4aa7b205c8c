"""Propagation benchmark: from an API call returning to the dataplane serving the change.

Adds a listener (CreateLoadBalancerListeners) and measures until a TCP connection to the new
port on a servo's VIP gets an HTTP answer through the load balancer; then deletes it. Runs in
the client's network namespace. Prints one JSON object with the median and all samples (ms).
"""
import argparse
import json
import socket
import statistics
import time

import boto3
from botocore.config import Config


def served(vip, port):
    try:
        with socket.create_connection((vip, port), timeout=0.2) as s:
            s.sendall(b"GET /name HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--secret", required=True)
    ap.add_argument("--lb", required=True)
    ap.add_argument("--vip", required=True)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    elb = boto3.client(
        "elb",
        endpoint_url=args.endpoint,
        region_name="us-east-1",
        aws_access_key_id=args.key,
        aws_secret_access_key=args.secret,
        config=Config(retries={"max_attempts": 1}),
    )
    samples = []
    for i in range(args.rounds):
        port = 9100 + i
        elb.create_load_balancer_listeners(
            LoadBalancerName=args.lb,
            Listeners=[{"Protocol": "HTTP", "LoadBalancerPort": port, "InstanceProtocol": "HTTP", "InstancePort": 80}],
        )
        t = time.perf_counter()
        while not served(args.vip, port):
            if time.perf_counter() - t > 10:
                raise SystemExit(f"listener {port} not served after 10 s")
            time.sleep(0.001)
        samples.append((time.perf_counter() - t) * 1e3)
        elb.delete_load_balancer_listeners(LoadBalancerName=args.lb, LoadBalancerPorts=[port])
    print(json.dumps({"propagation_ms": statistics.median(samples), "samples_ms": samples}))


if __name__ == "__main__":
    main()
