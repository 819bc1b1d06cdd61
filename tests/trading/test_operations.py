"""Operation types: validation with clear reasons, cards in both languages, stable hashes."""

from __future__ import annotations

from typing import Any

import pytest

from vbank.trading.operations import (
    REGISTRY,
    AccountView,
    OperationError,
    OwnTransfer,
    card_hash,
    check,
    format_amount,
    parse_operation,
    render,
)

ACCOUNTS = [
    AccountView(1, "VB000000001001", "current", "CNY", 100_000),
    AccountView(2, "VB000000001002", "savings", "CNY", 50_000),
    AccountView(3, "VB000000001003", "euro", "EUR", 10_000),
]


def own(**kw: Any) -> dict[str, Any]:
    return {
        "kind": "own_transfer",
        "from_account": "VB000000001001",
        "to_account": "VB000000001002",
        "amount_minor": 12_345,
        "currency": "CNY",
        **kw,
    }


EXAMPLES: list[dict[str, Any]] = [
    own(),
    {
        "kind": "payee_transfer",
        "from_account": "VB000000001001",
        "payee_name": "Wang Fang",
        "payee_account": "VB000000002001",
        "amount_minor": 250_000,
        "currency": "CNY",
    },
    {
        "kind": "term_deposit",
        "from_account": "VB000000001002",
        "amount_minor": 40_000,
        "currency": "CNY",
        "term_months": 12,
    },
    {"kind": "limit_change", "new_daily_limit_minor": 1_000_000, "currency": "CNY"},
]


def reason_of(data: dict[str, Any], accounts: list[AccountView] = ACCOUNTS) -> str:
    with pytest.raises(OperationError) as info:
        check(parse_operation(data), accounts)
    assert info.value.message
    return info.value.reason


def test_registry_covers_the_four_types() -> None:
    assert set(REGISTRY) == {"own_transfer", "payee_transfer", "term_deposit", "limit_change"}
    assert {e["kind"] for e in EXAMPLES} == set(REGISTRY)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (own(amount_minor=0), "non_positive_amount"),
        (own(amount_minor=-5), "non_positive_amount"),
        (own(amount_minor=1.5), "invalid_field"),
        (own(amount_minor="100"), "invalid_field"),
        (own(amount_minor=True), "invalid_field"),
        (own(currency="XYZ"), "unknown_currency"),
        (own(currency="cny"), "unknown_currency"),
        (own(from_account="VB999"), "foreign_account"),
        (own(to_account="VB999"), "foreign_account"),
        (own(to_account="VB000000001001"), "same_account"),
        (own(to_account="VB000000001003"), "currency_mismatch"),
        (own(currency="EUR"), "currency_mismatch"),
        (own(amount_minor=100_001), "insufficient_funds"),
        (own(extra=1), "invalid_field"),
        ({"kind": "loan"}, "unknown_operation"),
        ({**EXAMPLES[2], "term_months": 7}, "bad_term"),
        ({**EXAMPLES[1], "payee_account": "VB000000001002"}, "payee_is_own_account"),
        ({**EXAMPLES[1], "payee_name": " x"}, "bad_payee_name"),
        ({**EXAMPLES[3], "new_daily_limit_minor": 0}, "non_positive_amount"),
    ],
)
def test_refusals_have_clear_reasons(data: dict[str, Any], reason: str) -> None:
    assert reason_of(data) == reason


def test_messages_name_the_problem() -> None:
    with pytest.raises(OperationError, match="amount_minor: amount must be a positive"):
        parse_operation(own(amount_minor=0))
    with pytest.raises(OperationError, match="only same-currency"):
        check(parse_operation(own(currency="EUR")), ACCOUNTS)


def test_operations_are_exact_integers() -> None:
    op = parse_operation(own(amount_minor=10**14))
    assert isinstance(op, OwnTransfer) and op.amount_minor == 10**14
    assert format_amount(10**14 + 1, "CNY", "en") == "CNY 1,000,000,000,000.01"
    assert format_amount(5, "CNY", "zh-CN") == "人民币 0.05"
    assert format_amount(1234, "JPY", "en") == "JPY 1,234"


def test_cards_in_both_languages() -> None:
    op = parse_operation(EXAMPLES[1])
    en = render(op, ACCOUNTS, "en")
    zh = render(op, ACCOUNTS, "zh-CN")
    assert en["title"] == "Transfer to a payee"
    assert zh["title"] == "向收款人转账"
    assert dict(en["lines"]) == {
        "Amount": "CNY 2,500.00",
        "From": "current ····1001",
        "To": "Wang Fang ····2001",
        "Fees": "CNY 0.00",
        "Effect": "CNY 2,500.00 moves from current ····1001 to Wang Fang ····2001",
    }
    assert dict(zh["lines"]) == {
        "金额": "人民币 2,500.00",
        "付款账户": "current ····1001",
        "收款方": "Wang Fang ····2001",
        "手续费": "人民币 0.00",
        "结果": "从 current ····1001 转出 人民币 2,500.00 至 Wang Fang ····2001",
    }


@pytest.mark.parametrize("data", EXAMPLES, ids=lambda d: d["kind"])
@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_every_type_renders_amount_from_to_fees_effect(data: dict[str, Any], lang: Any) -> None:
    card = render(parse_operation(data), ACCOUNTS, lang)
    assert len(card["lines"]) == 5 and all(v for _, v in card["lines"])
    assert card["operation"] == data


def test_card_hash_is_stable_and_binds_every_detail() -> None:
    op = parse_operation(EXAMPLES[0])
    card = render(op, ACCOUNTS, "en")
    h = card_hash(card)
    assert len(h) == 64
    assert (
        card_hash(render(parse_operation(dict(reversed(EXAMPLES[0].items()))), ACCOUNTS, "en")) == h
    )
    assert h == card_hash(dict(reversed(list(card.items()))))
    # pinned: a change in rendering changes what customers sign, so it must be deliberate
    assert h == "c5466f7c16e25e1e61cef16a0c612e5ab422f4469528d4f6fe108194b2052a28"
    assert card_hash(render(op, ACCOUNTS, "zh-CN")) != h
    assert card_hash(render(parse_operation(own(amount_minor=12_346)), ACCOUNTS, "en")) != h
    renamed = [AccountView(1, "VB000000001001", "daily", "CNY"), *ACCOUNTS[1:]]
    assert card_hash(render(op, renamed, "en")) != h


def test_render_refuses_foreign_accounts() -> None:
    with pytest.raises(OperationError) as info:
        render(parse_operation(own(from_account="VB000000002001")), ACCOUNTS, "en")
    assert info.value.reason == "foreign_account"
