"""Check the web translation catalogues against the pages and scripts that use them.

Run ``python web/check_i18n.py`` (stdlib only); it exits 1 and lists every problem found:

* a key used in HTML (``data-i18n``, ``data-i18n-placeholder``, ``-title``, ``-aria-label``)
  or in JavaScript (``t('key')``, ``hasKey('key')``, ``key: 'key'``, ``data-i18n`` strings)
  that a catalogue lacks;
* a key built at run time (roles, error codes) that a catalogue lacks (see ``DYNAMIC_KEYS``);
* catalogues whose key sets differ, values that are not non-empty strings, or translations
  whose ``{placeholders}`` differ from English (the interpolation would silently break).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from html.parser import HTMLParser
from pathlib import Path

WEB_DIR = Path(__file__).resolve().parent
REFERENCE_LANGUAGE = "en"
LANGUAGES = ("en", "zh-CN")

HTML_ATTRIBUTES = frozenset(
    {"data-i18n", "data-i18n-placeholder", "data-i18n-title", "data-i18n-aria-label"}
)

# Keys the scripts assemble from data (`role.${user.role}`, `errors.${problem.code}`,
# `video.state.${role}.${state}`...), which no literal in the source reveals. The API
# contract and the websocket protocol (signaling/protocol.py) fix these values.
ROLES = ("customer", "agent", "auditor", "supervisor")
PROBLEM_CODES = (
    "invalid_credentials",
    "throttled",
    "invalid_request",
    # surveys and follow-up tasks (vbank/http/survey_views.py)
    "already_answered",
    "already_claimed",
    "already_closed",
    "expired",
    "invalid_link",
    "link_expired",
    "not_claimed",
    "not_yours",
)
SKILLS = ("accounts", "cards", "wealth", "loans", "general")
# protocol ErrorCode values, plus the client's own offline / timeout / disconnected
REALTIME_ERROR_CODES = (
    "bad_json",
    "too_large",
    "unknown_type",
    "invalid_message",
    "unsupported_version",
    "forbidden",
    "not_found",
    "rate_limited",
    "out_of_order",
    "bad_sdp",
    "refused",
    "internal",
    "offline",
    "timeout",
    "disconnected",
    "generic",
)
VIDEO_STATES = ("none", "requested", "consent_pending", "consented", "negotiating", "live", "ended")
VIDEO_END_REASONS = ("hangup", "declined", "ice_failed", "disconnect", "transfer", "error")
CLOSE_REASONS = ("customer", "agent", "timeout", "abandoned", "system")
# identity verification (static/js/verify.js; protocol VerifyProgress / VerifyReference,
# liveness reason codes from vbank/identity/liveness.py)
VERIFY_PHASES = ("idle", "running", "finished", "cancelled", "failed", "result", "decided")
VERIFY_GUIDANCE = ("no_face", "only_you", "move_closer", "more_light", "less_light", "hold_still")
VERIFY_STEPS = ("blink", "turn_left", "turn_right")
VERIFY_STEP_STATUSES = ("pending", "current", "passed", "failed")
VERIFY_REFERENCE_CODES = (
    "no_face",
    "several_faces",
    "face_too_small",
    "too_large",
    "not_an_image",
    "too_many_pixels",
)
LIVENESS_REASONS = (
    "timeout",
    "face_lost",
    "wrong_direction",
    "challenge_incomplete",
    "static_video",
    "no_motion",
    "rigid_face",
    "insufficient_frames",
)
DYNAMIC_KEYS = (
    *(f"role.{role}" for role in ROLES),
    *(f"errors.{code}" for code in PROBLEM_CODES),
    "errors.throttled_retry",
    "errors.network",
    "errors.unknown",
    *(f"skill.{skill}" for skill in SKILLS),
    *(f"ws_errors.{code}" for code in REALTIME_ERROR_CODES),
    *(f"video.state.{role}.{state}" for role in ("customer", "agent") for state in VIDEO_STATES),
    *(f"video.ended.{reason}" for reason in VIDEO_END_REASONS),
    *(f"{page}.closed.{reason}" for page in ("customer", "agent") for reason in CLOSE_REASONS),
    *(f"verify.state.{role}.{phase}" for role in ("customer", "agent") for phase in VERIFY_PHASES),
    *(
        f"verify.guidance.{role}.{code}"
        for role in ("customer", "agent")
        for code in (*VERIFY_GUIDANCE, "ok", "searching")
    ),
    *(f"verify.step.{role}.{step}" for role in ("customer", "agent") for step in VERIFY_STEPS),
    *(f"verify.status.{status}" for status in VERIFY_STEP_STATUSES),
    *(f"verify.ref_code.{code}" for code in VERIFY_REFERENCE_CODES),
    *(f"verify.reason.{code}" for code in LIVENESS_REASONS),
    *(f"verify.result.reference.{ref}" for ref in ("on_file", "document", "unknown")),
    *(
        f"verify.outcome.{role}.{outcome}"
        for role in ("customer", "agent")
        for outcome in ("verified", "rejected")
    ),
)

# Literal keys in JS: t('a.b'), hasKey('a.b'), key: 'a.b', setAttribute('data-i18n', 'a.b'),
# and markup built in strings: '<span data-i18n="a.b">'.
_KEY = r"[A-Za-z][\w-]*(?:\.[\w-]+)+"
_JS_KEY_PATTERNS = (
    re.compile(rf"""\b(?:t|hasKey)\(\s*['"`]({_KEY})['"`]"""),
    re.compile(rf"""\bkey:\s*['"`]({_KEY})['"`]"""),
    re.compile(rf"""['"]data-i18n[\w-]*['"]\s*,\s*['"`]({_KEY})['"`]"""),
    re.compile(rf"""\bdata-i18n[\w-]*=\\?["']({_KEY})\\?["']"""),
)
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


class _KeyCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.keys: list[tuple[str, int]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in HTML_ATTRIBUTES and value:
                self.keys.append((value, self.getpos()[0]))


def html_keys(path: Path) -> list[tuple[str, int]]:
    """(key, line) for every i18n attribute in an HTML file."""
    collector = _KeyCollector()
    collector.feed(path.read_text(encoding="utf-8"))
    collector.close()
    return collector.keys


def js_keys(path: Path) -> list[tuple[str, int]]:
    """(key, line) for every literal catalogue key in a JavaScript file."""
    found: list[tuple[str, int]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        for pattern in _JS_KEY_PATTERNS:
            found.extend((match.group(1), number) for match in pattern.finditer(line))
    return found


def load_catalogue(lang: str, catalogue_dir: Path) -> tuple[dict[str, str], list[str]]:
    """The catalogue's string entries, and problems with its shape."""
    path = catalogue_dir / f"{lang}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return {}, [f"{path.name}: cannot read catalogue: {exc}"]
    if not isinstance(data, dict):
        return {}, [f"{path.name}: top level must be an object of key -> string"]
    entries: dict[str, str] = {}
    problems: list[str] = []
    for key, value in data.items():
        if isinstance(value, str) and value.strip():
            entries[key] = value
        else:
            problems.append(f"{path.name}: {key!r} must be a non-empty string")
    return entries, problems


def _placeholders(text: str) -> set[str]:
    return set(_PLACEHOLDER.findall(text))


def compare_catalogues(catalogues: dict[str, dict[str, str]]) -> list[str]:
    """Key-set and placeholder mismatches against the reference language."""
    reference = catalogues.get(REFERENCE_LANGUAGE, {})
    problems: list[str] = []
    for lang, entries in catalogues.items():
        if lang == REFERENCE_LANGUAGE:
            continue
        for key in sorted(reference.keys() - entries.keys()):
            problems.append(f"{lang}.json: missing key {key!r} (present in {REFERENCE_LANGUAGE})")
        for key in sorted(entries.keys() - reference.keys()):
            problems.append(f"{lang}.json: extra key {key!r} (absent from {REFERENCE_LANGUAGE})")
        for key in sorted(reference.keys() & entries.keys()):
            want, got = _placeholders(reference[key]), _placeholders(entries[key])
            if want != got:
                problems.append(
                    f"{lang}.json: {key!r} placeholders {sorted(got)} differ from {sorted(want)}"
                )
    return problems


def _uses(web_dir: Path) -> Iterable[tuple[str, str]]:
    """(key, where) for every key the pages and scripts use."""
    for path in sorted(web_dir.rglob("*.html")):
        for key, line in html_keys(path):
            yield key, f"{path.relative_to(web_dir)}:{line}"
    for path in sorted(web_dir.rglob("*.js")):
        for key, line in js_keys(path):
            yield key, f"{path.relative_to(web_dir)}:{line}"
    for key in DYNAMIC_KEYS:
        yield key, "check_i18n.DYNAMIC_KEYS"


def find_problems(web_dir: Path = WEB_DIR) -> list[str]:
    """Every problem found; an empty list means the catalogues are complete."""
    catalogue_dir = web_dir / "static" / "i18n"
    catalogues: dict[str, dict[str, str]] = {}
    problems: list[str] = []
    for lang in LANGUAGES:
        catalogues[lang], shape_problems = load_catalogue(lang, catalogue_dir)
        problems.extend(shape_problems)
    problems.extend(compare_catalogues(catalogues))
    for key, where in _uses(web_dir):
        for lang, entries in catalogues.items():
            if key not in entries:
                problems.append(f"{where}: key {key!r} missing from {lang}.json")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    web_dir = Path(args[0]).resolve() if args else WEB_DIR
    problems = find_problems(web_dir)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"check_i18n: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print("check_i18n: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
