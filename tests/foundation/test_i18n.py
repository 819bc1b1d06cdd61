from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

WEB = Path(__file__).resolve().parents[2] / "web"


def test_every_ui_key_exists_in_both_languages() -> None:
    result = subprocess.run(
        [sys.executable, str(WEB / "check_i18n.py")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_catalogues_are_really_translated() -> None:
    en = json.loads((WEB / "static/i18n/en.json").read_text(encoding="utf-8"))
    zh = json.loads((WEB / "static/i18n/zh-CN.json").read_text(encoding="utf-8"))
    assert en.keys() == zh.keys()
    assert len(en) >= 20
    translated = [k for k in en if any("\u4e00" <= ch <= "\u9fff" for ch in zh[k])]
    # brand names may stay as they are; everything else is Chinese
    assert len(translated) >= len(en) - 3
