"""Shared fixtures: a fresh, migrated database per test (SQLite by default, PostgreSQL when
``VBANK_TEST_DATABASE_URL`` names a server), settings in a temporary data directory, the
application, and helpers to create users and sign in."""

from __future__ import annotations

import base64
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from vbank.app import create_app
from vbank.auth.passwords import Passwords
from vbank.auth.users import create_user
from vbank.config import Settings
from vbank.db import Database, sync_url
from vbank.migrate import upgrade
from vbank.roles import Role

PG_ADMIN_URL = os.environ.get("VBANK_TEST_DATABASE_URL", "")
TEST_PASSWORD = "correct-horse-battery"
TEST_MASTER_KEY = ("test1", bytes(range(32)))


def backend_name() -> str:
    return "postgresql" if PG_ADMIN_URL else "sqlite"


@pytest.fixture(scope="session")
def _template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database migrated once per test session; each test gets a copy of it."""
    if PG_ADMIN_URL:
        name = f"vbank_tmpl_{uuid.uuid4().hex[:8]}"
        admin = create_engine(sync_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        upgrade(url)
        yield name
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    else:
        path = tmp_path_factory.mktemp("template") / "template.sqlite3"
        upgrade(f"sqlite:///{path}")
        yield str(path)


@pytest.fixture
def database_url(_template: str, tmp_path: Path) -> Iterator[str]:
    if PG_ADMIN_URL:
        name = f"vbank_t_{uuid.uuid4().hex[:10]}"
        admin = create_engine(sync_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{_template}"'))
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    else:
        target = tmp_path / "vbank.sqlite3"
        shutil.copyfile(_template, target)
        yield f"sqlite:///{target}"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    data_dir = tmp_path / "data"
    data_dir.mkdir(exist_ok=True)
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        secret_key="test-secret-" + "x" * 40,
        master_keys=(TEST_MASTER_KEY,),
        # cheaper Argon2 parameters keep the suite fast; production defaults are in Settings
        password_time_cost=1,
        password_memory_kib=8 * 1024,
        signin_max_failures=3,
        signin_lockout_s=60,
        log_json=False,
    )


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = Database(settings.database_url)
    yield database
    await database.close()


@pytest.fixture
def aiohttp_server(database_url: str, aiohttp_server: Any) -> Any:
    """pytest-aiohttp's server factory, set up after the test's database so that it closes
    its servers (and their shutdown work, such as the last audit checkpoint) before the
    database is dropped, whatever order a test names its fixtures in."""
    return aiohttp_server


@pytest.fixture
def aiohttp_client(aiohttp_server: Any, aiohttp_client: Any) -> Any:
    """pytest-aiohttp's client factory, closed before the database for the same reason."""
    return aiohttp_client


@pytest.fixture
def app(settings: Settings) -> web.Application:
    return create_app(settings)


@pytest.fixture
async def client(aiohttp_client: Any, app: web.Application) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = await aiohttp_client(app)
    return client


MakeUser = Callable[..., Awaitable[int]]


@pytest.fixture
def make_user(settings: Settings) -> MakeUser:
    """Create a user straight in the database (as `vbank user add` would); returns its id."""

    async def make(username: str, role: Role, **kw: Any) -> int:
        database = Database(settings.database_url)
        try:
            async with database.transaction() as session:
                if role is Role.AGENT:
                    kw.setdefault("skills", ("accounts",))
                user = await create_user(
                    session,
                    Passwords(settings.password_time_cost, settings.password_memory_kib),
                    username=username,
                    password=kw.pop("password", TEST_PASSWORD),
                    role=role,
                    **kw,
                )
                return user.id
        finally:
            await database.close()

    return make


async def signin(client: TestClient[Any, Any], username: str, password: str = TEST_PASSWORD) -> str:
    """Sign in through the API; returns the CSRF token (the cookie stays in the client jar)."""
    resp = await client.post("/api/auth/signin", json={"username": username, "password": password})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    token: str = body["csrf_token"]
    return token


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
