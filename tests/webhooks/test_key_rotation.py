"""A master-key rotation re-wraps the endpoints' signing secrets too: after it, the old
master key can be removed and every secret still signs the same way."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from audit.envelope import MasterKeyring, UnknownMasterKeyError
from tests.webhooks.conftest import MakeEndpoint
from vbank.db import Database
from vbank.webhooks import sealing
from vbank.webhooks.endpoints import rewrap_secrets
from vbank.webhooks.models import WebhookSecret
from vbank.webhooks.signing import secret_bytes


async def test_rotation_rewraps_webhook_secrets(
    db: Database, keyring: MasterKeyring, make_endpoint: MakeEndpoint
) -> None:
    _, first = await make_endpoint("http://127.0.0.1:9/a")
    _, second = await make_endpoint("http://127.0.0.1:9/b")
    new_key = ("k9", secrets.token_bytes(32))
    old_id = keyring.current_id
    rotated = MasterKeyring({new_key[0]: new_key[1], old_id: keyring.get(old_id)}, "k9")

    assert await rewrap_secrets(db, rotated) == (2, 0, [])
    assert await rewrap_secrets(db, rotated) == (0, 2, [])  # idempotent

    only_new = MasterKeyring({new_key[0]: new_key[1]}, "k9")
    async with db.sessions() as session:
        stored = (await session.scalars(select(WebhookSecret.sealed))).all()
    assert sorted(sealing.unseal(s, only_new) for s in stored) == sorted(
        [secret_bytes(first), secret_bytes(second)]
    )
    with pytest.raises(UnknownMasterKeyError):  # the old key alone no longer opens it
        sealing.unseal(stored[0], MasterKeyring({old_id: keyring.get(old_id)}, old_id))

    # a secret sealed under a key that is gone is reported, not lost silently
    async with db.transaction() as session:
        orphan = WebhookSecret(
            endpoint_id=1,
            sealed=sealing.seal(first, MasterKeyring({"gone": secrets.token_bytes(32)}, "gone")),
            created_at=datetime.now(UTC),
        )
        session.add(orphan)
        await session.flush()
        orphan_id = orphan.id
    assert await rewrap_secrets(db, only_new) == (0, 2, [orphan_id])
