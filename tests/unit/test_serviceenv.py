"""Kubelet's Service environment variables (tests/testbed/serviceenv.py)."""

from __future__ import annotations

from typing import Any

from tests.testbed.serviceenv import service_env


def service(name: str, namespace: str, ip: str, *ports: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"clusterIP": ip, "ports": list(ports)},
    }


MASTER = service("kubernetes", "default", "10.0.0.1", {"name": "https", "port": 443})
API = service("files-api", "team", "10.0.0.7", {"name": "api", "port": 8080, "protocol": "TCP"})


def test_links_of_the_namespace_and_the_master_service() -> None:
    env = service_env([MASTER, API], "team", enable_links=True)
    assert env["KUBERNETES_SERVICE_HOST"] == "10.0.0.1"
    assert env["KUBERNETES_SERVICE_PORT"] == "443"
    assert env["KUBERNETES_SERVICE_PORT_HTTPS"] == "443"
    assert env["KUBERNETES_PORT"] == "tcp://10.0.0.1:443"
    assert env["KUBERNETES_PORT_443_TCP_ADDR"] == "10.0.0.1"
    assert env["FILES_API_SERVICE_HOST"] == "10.0.0.7"
    assert env["FILES_API_SERVICE_PORT_API"] == "8080"
    assert env["FILES_API_PORT_8080_TCP"] == "tcp://10.0.0.7:8080"
    assert env["FILES_API_PORT_8080_TCP_PROTO"] == "tcp"
    assert env["FILES_API_PORT_8080_TCP_PORT"] == "8080"


def test_links_off_keep_only_the_master_service() -> None:
    env = service_env([MASTER, API], "team", enable_links=False)
    assert "FILES_API_SERVICE_HOST" not in env
    assert env["KUBERNETES_SERVICE_HOST"] == "10.0.0.1"


def test_other_namespaces_and_headless_services_give_nothing() -> None:
    other = service("db", "elsewhere", "10.0.0.9", {"port": 5432})
    headless = service("peers", "team", "None", {"port": 7000})
    udp = service("dns", "team", "10.0.0.10", {"name": "dns", "port": 53, "protocol": "UDP"})
    env = service_env([other, headless, udp], "team", enable_links=True)
    assert not any(key.startswith(("DB_", "PEERS_")) for key in env)
    assert env["DNS_PORT"] == "udp://10.0.0.10:53"
    assert env["DNS_PORT_53_UDP_PROTO"] == "udp"
