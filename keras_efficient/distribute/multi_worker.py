"""TF_CONFIG parsing and local multi-worker clusters for MultiWorkerMirroredStrategy."""

import json
import os
import socket

from keras_efficient.utils.validation import check_int

__all__ = ["parse_tf_config", "local_cluster_tf_configs", "find_free_ports"]


def parse_tf_config(value=None):
    """Parses and validates TF_CONFIG (the environment variable when `value` is None).

    Expected: {"cluster": {"worker": ["host:port", ...], ...},
               "task": {"type": "worker" | "chief" | ..., "index": i}}.

    Returns:
      The parsed dict.

    Raises:
      ValueError: naming what is missing or malformed.
    """
    if value is None:
        value = os.environ.get("TF_CONFIG")
        if not value:
            raise ValueError(
                "The 'multi_worker' strategy needs the TF_CONFIG environment variable, e.g. "
                '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
                '"task": {"type": "worker", "index": 0}}. It is not set.')
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as err:
            raise ValueError("TF_CONFIG is not valid JSON ({}). Received: {!r}".format(
                err, value)) from None
    if not isinstance(value, dict):
        raise ValueError("TF_CONFIG must be a JSON object. Received: {!r}".format(value))
    cluster = value.get("cluster")
    if not isinstance(cluster, dict) or not cluster:
        raise ValueError("TF_CONFIG needs a non-empty 'cluster' object. Received: {!r}".format(value))
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses:
            raise ValueError("TF_CONFIG cluster job {!r} must be a non-empty list of 'host:port'. "
                             "Received: {!r}".format(job, addresses))
        for address in addresses:
            host, sep, port = str(address).rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError("TF_CONFIG address {!r} of job {!r} is not 'host:port'.".format(
                    address, job))
    if "worker" not in cluster and "chief" not in cluster:
        raise ValueError("TF_CONFIG cluster needs a 'worker' (or 'chief') job. Received jobs: {}"
                         .format(sorted(cluster)))
    task = value.get("task")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError("TF_CONFIG needs a 'task' object with 'type' and 'index'. Received: {!r}"
                         .format(task))
    if task["type"] not in cluster:
        raise ValueError("TF_CONFIG task type {!r} is not a job of the cluster {}.".format(
            task["type"], sorted(cluster)))
    index = task["index"]
    if isinstance(index, bool) or not isinstance(index, int) or not (
            0 <= index < len(cluster[task["type"]])):
        raise ValueError("TF_CONFIG task index {!r} is out of range for job {!r} with {} tasks."
                         .format(index, task["type"], len(cluster[task["type"]])))
    return value


def find_free_ports(count, host="127.0.0.1"):
    """`count` distinct TCP ports that are free on `host` right now."""
    count = check_int("count", count, low=1)
    sockets, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


def local_cluster_tf_configs(num_workers, host="127.0.0.1", ports=None):
    """TF_CONFIG JSON strings for `num_workers` workers on one machine (free ports by default)."""
    num_workers = check_int("num_workers", num_workers, low=1)
    ports = list(ports) if ports is not None else find_free_ports(num_workers, host)
    if len(ports) != num_workers:
        raise ValueError("Expected {} ports. Received: ports={}".format(num_workers, ports))
    workers = ["{}:{}".format(host, p) for p in ports]
    return [json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
            for i in range(num_workers)]
