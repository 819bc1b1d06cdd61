"""Operation types the agent can prepare for a customer, validated and rendered as cards.

Amounts are exact integers in minor units (never floats).  A card is the exact text the
customer confirms; :func:`card_hash` binds the confirmation to it (what you see is what
you sign), so rendering must be deterministic for a given operation, accounts and language.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from audit.log import canonical_json

logger = logging.getLogger(__name__)

Lang = Literal["en", "zh-CN"]
LANGS: tuple[Lang, ...] = ("en", "zh-CN")

# ISO 4217 codes we handle, with their minor-unit exponent and Chinese name.
CURRENCIES: dict[str, tuple[int, str]] = {
    "CNY": (2, "人民币"),
    "USD": (2, "美元"),
    "EUR": (2, "欧元"),
    "GBP": (2, "英镑"),
    "HKD": (2, "港元"),
    "CHF": (2, "瑞士法郎"),
    "JPY": (0, "日元"),
}

MAX_AMOUNT_MINOR = 10**15  # far above any real transfer; keeps sums inside BIGINT
TERM_MONTHS = (1, 3, 6, 12, 24, 36, 60)


class OperationError(Exception):
    """An operation refused with a machine reason (``reason``) and a sentence for people."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __repr__(self) -> str:
        return f"OperationError({self.reason!r}, {self.message!r})"


@dataclass(frozen=True)
class AccountView:
    """What validation and rendering need to know about one of the customer's accounts."""

    id: int
    number: str
    name: str
    currency: str
    balance_minor: int | None = None  # None: not known here (the backend checks funds)


def _positive_amount(value: int) -> int:
    if value <= 0:
        raise PydanticCustomError(
            "non_positive_amount",
            "amount must be a positive number of minor units (got {value})",
            {"value": value},
        )
    if value > MAX_AMOUNT_MINOR:
        raise PydanticCustomError(
            "amount_too_large", "amount is too large (got {value})", {"value": value}
        )
    return value


def _currency(value: str) -> str:
    if value not in CURRENCIES:
        raise PydanticCustomError(
            "unknown_currency",
            "currency must be an ISO 4217 code we support (got {value})",
            {"value": value},
        )
    return value


class _Operation(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class OwnTransfer(_Operation):
    """Money between two accounts of the same customer."""

    kind: Literal["own_transfer"] = "own_transfer"
    from_account: str = Field(min_length=1, max_length=34)
    to_account: str = Field(min_length=1, max_length=34)
    amount_minor: int
    currency: str

    _amount = field_validator("amount_minor")(_positive_amount)
    _cur = field_validator("currency")(_currency)


class PayeeTransfer(_Operation):
    """Money to somebody else's account (a payee: name and account number)."""

    kind: Literal["payee_transfer"] = "payee_transfer"
    from_account: str = Field(min_length=1, max_length=34)
    payee_name: str = Field(min_length=1, max_length=70)
    payee_account: str = Field(min_length=2, max_length=34, pattern=r"^[A-Z0-9]+$")
    amount_minor: int
    currency: str

    _amount = field_validator("amount_minor")(_positive_amount)
    _cur = field_validator("currency")(_currency)

    @field_validator("payee_name")
    @classmethod
    def _name(cls, value: str) -> str:
        if value != value.strip() or any(not c.isprintable() for c in value):
            raise PydanticCustomError(
                "bad_payee_name", "payee name must be printable text without outer spaces"
            )
        return value


class TermDeposit(_Operation):
    """Opens a term deposit funded from one of the customer's accounts."""

    kind: Literal["term_deposit"] = "term_deposit"
    from_account: str = Field(min_length=1, max_length=34)
    amount_minor: int
    currency: str
    term_months: int

    _amount = field_validator("amount_minor")(_positive_amount)
    _cur = field_validator("currency")(_currency)

    @field_validator("term_months")
    @classmethod
    def _term(cls, value: int) -> int:
        if value not in TERM_MONTHS:
            raise PydanticCustomError(
                "bad_term",
                "term must be one of {terms} months (got {value})",
                {"terms": ", ".join(map(str, TERM_MONTHS)), "value": value},
            )
        return value


class LimitChange(_Operation):
    """Sets the customer's daily limit for transfers to payees in one currency."""

    kind: Literal["limit_change"] = "limit_change"
    new_daily_limit_minor: int
    currency: str

    _amount = field_validator("new_daily_limit_minor")(_positive_amount)
    _cur = field_validator("currency")(_currency)


Operation = OwnTransfer | PayeeTransfer | TermDeposit | LimitChange
REGISTRY: dict[str, type[_Operation]] = {
    "own_transfer": OwnTransfer,
    "payee_transfer": PayeeTransfer,
    "term_deposit": TermDeposit,
    "limit_change": LimitChange,
}
_ADAPTER: TypeAdapter[Operation] = TypeAdapter(Annotated[Operation, Field(discriminator="kind")])


def parse_operation(data: Mapping[str, Any]) -> Operation:
    """Build an operation from JSON-like data; refusals carry the first problem's reason.

    JSON has no integer/float distinction problems here: strict mode refuses ``1.5`` and
    ``"100"`` for amounts, so a client cannot smuggle in a rounded value.
    """
    if data.get("kind") not in REGISTRY:
        raise OperationError("unknown_operation", f"unknown operation type {data.get('kind')!r}")
    try:
        return _ADAPTER.validate_python(dict(data))
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"][1:]) or "operation"
        reason = err["type"] if err["type"] in _OWN_REASONS else "invalid_field"
        raise OperationError(reason, f"{field}: {err['msg']}") from None


_OWN_REASONS = frozenset(
    {"non_positive_amount", "amount_too_large", "unknown_currency", "bad_payee_name", "bad_term"}
)


def _account(accounts: Sequence[AccountView], number: str, role: str) -> AccountView:
    for acc in accounts:
        if acc.number == number:
            return acc
    raise OperationError("foreign_account", f"the {role} account is not one of the customer's")


def _same_currency(acc: AccountView, currency: str, role: str) -> None:
    if acc.currency != currency:
        raise OperationError(
            "currency_mismatch",
            f"the {role} account holds {acc.currency}, the operation is in {currency}; "
            "only same-currency operations are supported",
        )


def _funds(acc: AccountView, amount: int) -> None:
    if acc.balance_minor is not None and acc.balance_minor < amount:
        raise OperationError(
            "insufficient_funds", "the source account does not cover the amount (no overdraft)"
        )


def check(op: Operation, accounts: Sequence[AccountView]) -> None:
    """Check the operation against the customer's own accounts (ownership, currency, funds
    when balances are given).  Raises :class:`OperationError`; the backend re-checks under
    its locks, this early check gives the agent a clear refusal before drafting."""
    if isinstance(op, LimitChange):
        return
    src = _account(accounts, op.from_account, "source")
    _same_currency(src, op.currency, "source")
    if isinstance(op, OwnTransfer):
        dst = _account(accounts, op.to_account, "destination")
        if dst.number == src.number:
            raise OperationError("same_account", "source and destination are the same account")
        _same_currency(dst, op.currency, "destination")
    if isinstance(op, PayeeTransfer) and any(a.number == op.payee_account for a in accounts):
        raise OperationError(
            "payee_is_own_account", "the payee account is the customer's own: use own_transfer"
        )
    _funds(src, op.amount_minor)


def amount_of(op: Operation) -> int:
    """The amount an operation is about, in minor units (a limit change: the new limit)."""
    return op.new_daily_limit_minor if isinstance(op, LimitChange) else op.amount_minor


def fee_minor(op: Operation) -> int:
    """Fees charged for an operation (none of today's types has one)."""
    return 0


def format_amount(amount_minor: int, currency: str, lang: Lang) -> str:
    """``CNY 1,234.56`` / ``人民币 1,234.56``: exact, from integers, never via floats."""
    exponent, zh_name = CURRENCIES[currency]
    sign = "-" if amount_minor < 0 else ""
    units, minor = divmod(abs(amount_minor), 10**exponent)
    text = f"{units:,}" + (f".{minor:0{exponent}d}" if exponent else "")
    return f"{sign}{zh_name if lang == 'zh-CN' else currency} {text}"


def _mask(number: str) -> str:
    return "····" + number[-4:]


def _acc_label(acc: AccountView) -> str:
    return f"{acc.name} {_mask(acc.number)}"


_LABELS: dict[Lang, dict[str, str]] = {
    "en": {
        "own_transfer": "Transfer between your accounts",
        "payee_transfer": "Transfer to a payee",
        "term_deposit": "Open a term deposit",
        "limit_change": "Change the daily transfer limit",
        "amount": "Amount",
        "from": "From",
        "to": "To",
        "fees": "Fees",
        "effect": "Effect",
        "none": "—",
    },
    "zh-CN": {
        "own_transfer": "本人账户间转账",
        "payee_transfer": "向收款人转账",
        "term_deposit": "开立定期存款",
        "limit_change": "修改每日转账限额",
        "amount": "金额",
        "from": "付款账户",
        "to": "收款方",
        "fees": "手续费",
        "effect": "结果",
        "none": "—",
    },
}


def _effect(op: Operation, lang: Lang, src: AccountView | None, dst_label: str) -> str:
    zh = lang == "zh-CN"
    if isinstance(op, LimitChange):
        amount = format_amount(op.new_daily_limit_minor, op.currency, lang)
        return (
            f"每日向收款人转账限额改为 {amount}"
            if zh
            else (f"Your daily limit for transfers to payees becomes {amount}")
        )
    amount = format_amount(op.amount_minor, op.currency, lang)
    assert src is not None
    if isinstance(op, TermDeposit):
        return (
            f"从 {_acc_label(src)} 转出 {amount}，存入 {op.term_months} 个月定期存款"
            if zh
            else f"{amount} leaves {_acc_label(src)} into a {op.term_months}-month term deposit"
        )
    return (
        f"从 {_acc_label(src)} 转出 {amount} 至 {dst_label}"
        if zh
        else f"{amount} moves from {_acc_label(src)} to {dst_label}"
    )


def render(op: Operation, accounts: Sequence[AccountView], lang: Lang) -> dict[str, Any]:
    """The confirmation card in one language: title, lines (label, value), and the
    machine fields it was rendered from.  Checks ownership first (a card is only ever
    rendered for an operation that could be confirmed)."""
    if lang not in LANGS:
        raise OperationError("unknown_language", f"unsupported language {lang!r}")
    check(op, [AccountView(a.id, a.number, a.name, a.currency) for a in accounts])
    labels = _LABELS[lang]
    src: AccountView | None = None
    if isinstance(op, LimitChange):
        amount_text = format_amount(op.new_daily_limit_minor, op.currency, lang)
        from_text = to_text = labels["none"]
    else:
        src = _account(accounts, op.from_account, "source")
        amount_text = format_amount(op.amount_minor, op.currency, lang)
        from_text = _acc_label(src)
        if isinstance(op, OwnTransfer):
            to_text = _acc_label(_account(accounts, op.to_account, "destination"))
        elif isinstance(op, PayeeTransfer):
            to_text = f"{op.payee_name} {_mask(op.payee_account)}"
        else:
            to_text = (
                f"{op.term_months} 个月定期存款"
                if lang == "zh-CN"
                else f"{op.term_months}-month term deposit"
            )
    fees_text = format_amount(fee_minor(op), op.currency, lang)
    effect = _effect(op, lang, src, to_text)
    return {
        "lang": lang,
        "title": labels[op.kind],
        "lines": [
            [labels["amount"], amount_text],
            [labels["from"], from_text],
            [labels["to"], to_text],
            [labels["fees"], fees_text],
            [labels["effect"], effect],
        ],
        "operation": op.model_dump(mode="json"),
    }


def card_hash(rendered: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of the exact card the customer saw."""
    return hashlib.sha256(canonical_json(dict(rendered)).encode()).hexdigest()


def operation_fingerprint(op: Operation, customer_id: int) -> str:
    """Identifies an operation for one customer: an idempotency key reused for a
    different operation is refused instead of silently returning the old result."""
    body = canonical_json({"customer": customer_id, "operation": op.model_dump(mode="json")})
    return hashlib.sha256(body.encode()).hexdigest()
