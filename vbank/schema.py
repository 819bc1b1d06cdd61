"""Every table of the service: importing this registers all models on one metadata.

Alembic's environment compares the migrations against it, and so does the test that a
model never changes without a migration.
"""

from __future__ import annotations

import audit.models  # noqa: F401  registers the audit tables
import vbank.contact.models
import vbank.identity.models
import vbank.models
import vbank.surveys.models
import vbank.trading.drafts
import vbank.trading.models
import vbank.webhooks.models  # noqa: F401  registers the webhook tables
from vbank.db import Base

__all__ = ["metadata"]

metadata = Base.metadata
