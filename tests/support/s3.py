"""A local S3 endpoint for end-to-end tests: moto's server, bound where pods reach the host.

DittoFS pods reach the host at the testbed node's bridge address (`node.address`), a private
address, so the DittoServer's S3 store needs `allowPrivateEndpoint: true` and path-style
addressing. moto keeps its buckets in memory, in this process, shared by every server
started here: each endpoint starts from a reset state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
# moto accepts any keys; these only have to match between the Secret and the checks.
ACCESS_KEY_ID = "e2e-access-key-id"
SECRET_ACCESS_KEY = "e2e-secret-access-key-0123456789"


@dataclass(frozen=True)
class S3Endpoint:
    """A running endpoint with one bucket, and a client to look into it."""

    url: str
    bucket: str
    client: Any  # boto3 S3 client (boto3 ships no type information)
    access_key_id: str = ACCESS_KEY_ID
    secret_access_key: str = SECRET_ACCESS_KEY
    region: str = REGION

    def objects(self, prefix: str = "") -> dict[str, int]:
        """Key -> size of every object under `prefix` in the bucket."""
        paginator = self.client.get_paginator("list_objects_v2")
        return {
            item["Key"]: int(item["Size"])
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
            for item in page.get("Contents") or ()
        }

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(self.objects(prefix))

    async def wait_for_objects(
        self, prefix: str, min_bytes: int = 1, timeout: float = 60.0
    ) -> dict[str, int]:
        """Poll until the objects under `prefix` hold at least `min_bytes` (DittoFS uploads
        asynchronously); key -> size."""
        deadline = time.monotonic() + timeout
        while True:
            found = await asyncio.to_thread(self.objects, prefix)
            if sum(found.values()) >= min_bytes:
                return found
            if time.monotonic() > deadline:
                everything = await asyncio.to_thread(self.objects)
                raise AssertionError(
                    f"less than {min_bytes} bytes under s3://{self.bucket}/{prefix} after "
                    f"{timeout} s; the bucket holds {len(everything)} object(s): "
                    f"{dict(list(everything.items())[:20])}"
                )
            await asyncio.sleep(1)


@dataclass(frozen=True)
class Keys:
    access_key_id: str
    secret_access_key: str


def aws_client(service: str, url: str, keys: Keys) -> Any:
    """A boto3 client of `service` at the local endpoint, signing with `keys`."""
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=keys.access_key_id,
        aws_secret_access_key=keys.secret_access_key,
    )


def _moto_api(url: str, path: str, body: str = "") -> None:
    """POST to moto's own API (/moto-api/...); moto reads a raw body, not a form."""
    request = urllib.request.Request(
        f"{url}/moto-api/{path}",
        data=body.encode(),
        headers={"Content-Type": "text/plain"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


@contextlib.contextmanager
def running_s3(address: str, bucket: str = "dittofs-e2e") -> Iterator[S3Endpoint]:
    """moto on `address` (a free port), with `bucket` created; stopped afterwards."""
    server = ThreadedMotoServer(ip_address=address, port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        _moto_api(url, "reset")  # forget buckets an earlier endpoint of this process made
        client = aws_client("s3", url, Keys(ACCESS_KEY_ID, SECRET_ACCESS_KEY))
        client.create_bucket(Bucket=bucket)
        yield S3Endpoint(url=url, bucket=bucket, client=client)
    finally:
        server.stop()


class KeyedS3:
    """An S3 endpoint that checks credentials, as a real one does: moto with its IAM checks on.

    Keys belong to an IAM user allowed every action; `issue` makes another pair, `revoke`
    deletes one (its requests then fail with 403 InvalidAccessKeyId). The endpoint's own
    client inspects the bucket with keys of another such user. Made before the checks are
    on (`checking_keys`), which are a setting of moto's whole process.
    """

    USER = "dittofs"
    ALLOW_ALL = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
        }
    )

    def __init__(self, endpoint: S3Endpoint) -> None:
        self.iam = aws_client("iam", endpoint.url, Keys(ACCESS_KEY_ID, SECRET_ACCESS_KEY))
        for user in ("inspector", self.USER):
            self.iam.create_user(UserName=user)
            self.iam.put_user_policy(UserName=user, PolicyName="all", PolicyDocument=self.ALLOW_ALL)
        inspector = self._issue("inspector")
        self.iam = aws_client("iam", endpoint.url, inspector)
        self.endpoint = replace(endpoint, client=aws_client("s3", endpoint.url, inspector))

    def _issue(self, user: str) -> Keys:
        made = self.iam.create_access_key(UserName=user)["AccessKey"]
        return Keys(made["AccessKeyId"], made["SecretAccessKey"])

    def issue(self) -> Keys:
        """A new key pair of the DittoFS user (moto allows two at a time, as AWS does)."""
        return self._issue(self.USER)

    def revoke(self, keys: Keys) -> None:
        self.iam.delete_access_key(UserName=self.USER, AccessKeyId=keys.access_key_id)

    def with_keys(self, keys: Keys) -> S3Endpoint:
        """The endpoint as a DittoServer should be given it: with these keys."""
        return replace(
            self.endpoint,
            access_key_id=keys.access_key_id,
            secret_access_key=keys.secret_access_key,
        )


@contextlib.contextmanager
def checking_keys(endpoint: S3Endpoint) -> Iterator[KeyedS3]:
    """`endpoint` with moto's credential checks on (see KeyedS3)."""
    keyed = KeyedS3(endpoint)
    _moto_api(endpoint.url, "reset-auth", "0")  # every request from now on is authenticated
    try:
        yield keyed
    finally:
        _moto_api(endpoint.url, "reset-auth", "inf")
