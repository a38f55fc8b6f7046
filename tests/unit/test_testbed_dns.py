"""The testbed's cluster DNS settings: what pods get in resolv.conf, and the zones served."""

from __future__ import annotations

import ipaddress

import pytest

from tests.testbed import dns


def test_resolv_conf_is_kubelets_cluster_first_file() -> None:
    assert dns.resolv_conf("team-a") == (
        "nameserver 10.0.0.10\n"
        "search team-a.svc.cluster.local svc.cluster.local cluster.local\n"
        "options ndots:5\n"
    )


def test_resolv_conf_other_nameserver_and_domain() -> None:
    text = dns.resolv_conf("ns", nameserver="10.96.0.10", cluster_domain="example.org")
    assert text.splitlines()[:2] == [
        "nameserver 10.96.0.10",
        "search ns.svc.example.org svc.example.org example.org",
    ]


def test_cluster_dns_ip_is_in_the_service_range() -> None:
    service_range = ipaddress.ip_network(dns.pki.SERVICE_CLUSTER_IP_RANGE)
    assert ipaddress.ip_address(dns.CLUSTER_DNS_IP) in service_range


def test_reverse_zones_of_service_and_pod_networks() -> None:
    assert dns._zones() == ["cluster.local", "0.10.in-addr.arpa", "233.10.in-addr.arpa"]


def test_reverse_zone_needs_an_octet_boundary() -> None:
    with pytest.raises(ValueError, match="octet"):
        dns._reverse_zone(ipaddress.IPv4Network("10.0.0.0/12"))
