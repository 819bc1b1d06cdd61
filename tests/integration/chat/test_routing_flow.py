"""Transfers and requeues over the real websocket: permission-checked, history follows the
contact, and a contact whose agent stays away past the grace period goes back to the head."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import MakeUser
from tests.integration.chat.conftest import assigned_contact
from vbank.app import create_app
from vbank.config import Settings
from vbank.roles import Role


@pytest.fixture
def app(settings: Settings) -> web.Application:
    return create_app(replace(settings, agent_grace_s=0.5))


async def test_transfer_to_agent_and_to_skill(connect: Any, make_user: MakeUser) -> None:
    customer, ana, contact_id = await assigned_contact(connect, make_user)
    ben_id = await make_user("ben", Role.AGENT, skills=("wealth",), display_name="Ben")
    ben = await connect("ben")
    await customer.send("chat.send", contact_id=contact_id, client_id="h1", text="before transfer")
    await ana.wait_type("chat.message", text="before transfer")

    # the customer may not transfer; ana may not transfer to an away agent
    ref = await customer.send("contact.transfer", contact_id=contact_id, to_skill="wealth")
    assert (await customer.wait_type("error", ref_id=ref))["code"] == "forbidden"
    ref = await ana.send("contact.transfer", contact_id=contact_id, to_agent_id=str(ben_id))
    assert (await ana.wait_type("error", ref_id=ref))["code"] == "forbidden"

    await ben.send("agent.status", status="available")
    await ben.wait_type("ack")
    ref = await ana.send("contact.transfer", contact_id=contact_id, to_agent_id=str(ben_id))
    await ana.wait_type("ack", id=ref)
    assigned = await customer.wait_type("contact.assigned", contact_id=contact_id, agent_name="Ben")
    assert assigned["agent_id"] == str(ben_id)
    # the history follows the contact to the new agent
    await ben.wait_type("chat.message", contact_id=contact_id, text="before transfer")
    # ana no longer takes part
    ref = await ana.send("chat.send", contact_id=contact_id, client_id="x", text="still mine?")
    assert (await ana.wait_type("error", ref_id=ref))["code"] == "not_found"

    # back to a skill queue: ana (accounts) gets it again
    ref = await ben.send("contact.transfer", contact_id=contact_id, to_skill="accounts")
    await ben.wait_type("ack", id=ref)
    await ana.wait_for(
        lambda f: (
            f.get("type") == "contact.assigned"
            and f["contact_id"] == contact_id
            and f["agent_id"] != str(ben_id)
        )
    )


async def test_agent_lost_past_grace_goes_back_to_the_head(
    connect: Any, make_user: MakeUser
) -> None:
    customer, ana, contact_id = await assigned_contact(connect, make_user)
    await make_user("carl", Role.AGENT, skills=("accounts",), display_name="Carl")
    carl = await connect("carl")
    await ana.close()  # ana's only tab dies and she does not come back
    await carl.send("agent.status", status="available")
    moved = await customer.wait_for(
        lambda f: f.get("type") == "contact.assigned" and f.get("agent_name") == "Carl", timeout=10
    )
    assert moved["contact_id"] == contact_id
    await carl.wait_type("contact.assigned", contact_id=contact_id)
