"""connect(): the session does no per-request environment lookups, the proxy is resolved once."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dittofs_controller.kube.client import connect, environment_proxy


def kubeconfig(tmp_path: Path, server: str) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return str(path)


def clear_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)


async def test_the_session_does_not_look_at_the_environment_per_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_proxies(monkeypatch)
    client = await connect(kubeconfig(tmp_path, "https://api.example:6443"), None)
    try:
        rest = client._api.rest_client
        assert rest.pool_manager.trust_env is False
        assert not rest.pool_manager.closed and rest.pool_manager.connector is not None
        assert rest.proxy is None
    finally:
        await client.close()


async def test_an_environment_proxy_is_taken_once_and_no_proxy_is_honoured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_proxies(monkeypatch)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    client = await connect(kubeconfig(tmp_path, "https://api.example:6443"), None)
    try:
        assert client._api.rest_client.proxy == "http://proxy.example:3128"
    finally:
        await client.close()
    monkeypatch.setenv("NO_PROXY", "api.example")
    assert environment_proxy("https://api.example:6443") is None
    assert environment_proxy("https://other.example:6443") == "http://proxy.example:3128"
