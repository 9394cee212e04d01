"""Invoices: exact arithmetic, the Chinese uppercase amount, real CJK glyphs, determinism."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import ImageFont

from glmlab.data import amount_in_words_zh, fonts, generate_invoices, load_records
from glmlab.data.invoices import CATALOG, QUESTIONS, ZH_NAME_PARTS, make_invoice
from glmlab.errors import ConfigError, InputError

# Worked examples; the ones marked PBoC are the People's Bank of China's own examples.
UPPERCASE_EXAMPLES = {
    "1234.50": "壹仟贰佰叁拾肆元伍角整",
    "0.05": "伍分",
    "0.50": "伍角整",
    "0": "零元整",
    "16.00": "壹拾陆元整",  # PBoC: a leading ten is 壹拾
    "1004.56": "壹仟零肆元伍角陆分",  # PBoC
    "325.04": "叁佰贰拾伍元零肆分",  # PBoC
    "6007.14": "陆仟零柒元壹角肆分",  # PBoC
    "107000.53": "壹拾万柒仟元伍角叁分",  # PBoC (the form without the optional 零)
    "1680.32": "壹仟陆佰捌拾元叁角贰分",  # PBoC (idem)
    "100500": "壹拾万零伍佰元整",
    "20005000": "贰仟万伍仟元整",
    "100005000": "壹亿零伍仟元整",
    "100010000": "壹亿零壹万元整",
    "1010": "壹仟零壹拾元整",
    "120000000.01": "壹亿贰仟万元零壹分",
}


@pytest.mark.parametrize("amount", sorted(UPPERCASE_EXAMPLES))
def test_amount_in_words_zh_matches_worked_example(amount):
    assert amount_in_words_zh(Decimal(amount)) == UPPERCASE_EXAMPLES[amount]


def test_amount_in_words_zh_writes_yuan_as_on_vat_invoices_when_asked():
    assert amount_in_words_zh(Decimal("117"), yuan="圆") == "壹佰壹拾柒圆整"


@pytest.mark.parametrize("amount", [Decimal("-1"), Decimal("1.234"), 1.5, "abc", Decimal("1000000000000")])
def test_amount_in_words_zh_refuses_what_an_invoice_cannot_hold(amount):
    with pytest.raises(InputError):
        amount_in_words_zh(amount)


@pytest.mark.parametrize("language", ["zh", "en"])
def test_invoice_totals_are_exact_sums_of_items_and_tax(language):
    rng = np.random.default_rng(7)
    for _ in range(200):
        invoice = make_invoice(rng, language, max_items=6)
        fields = invoice.fields()
        amounts = [Decimal(item["amount"]) for item in fields["items"]]
        for item in fields["items"]:
            assert Decimal(item["amount"]) == item["quantity"] * Decimal(item["unit_price"])
        assert Decimal(fields["subtotal"]) == sum(amounts)
        assert Decimal(fields["total"]) == sum(amounts) + Decimal(fields["tax"])
        rate = Decimal(fields["tax_rate"].rstrip("%")) / 100
        exact = Decimal(fields["subtotal"]) * rate
        if language == "en":  # tax on the subtotal, rounded to the cent
            assert Decimal(fields["tax"]) == exact.quantize(Decimal("0.01"), rounding="ROUND_HALF_UP")
        else:  # Chinese VAT: each line's tax rounded, then summed
            assert abs(Decimal(fields["tax"]) - exact) <= Decimal("0.005") * len(fields["items"])
            assert fields["total_in_words"] == amount_in_words_zh(Decimal(fields["total"]))


def test_invoice_answer_is_the_ground_truth_fields_as_json():
    for record in generate_invoices(3, seed=2, language="zh") + generate_invoices(3, seed=2, language="en"):
        assert json.loads(record["answer"]) == record["metadata"]["fields"]
        assert record["question"] == QUESTIONS[record["metadata"]["language"]]


@pytest.mark.parametrize("language", ["zh", "en"])
def test_same_seed_gives_identical_invoice_files(tmp_path, language):
    first = generate_invoices(3, seed=5, out_dir=tmp_path / "a", language=language)
    second = generate_invoices(3, seed=5, out_dir=tmp_path / "b", language=language)
    assert [r["answer"] for r in first] == [r["answer"] for r in second]
    assert _folder_bytes(tmp_path / "a") == _folder_bytes(tmp_path / "b")


def test_different_seeds_give_different_invoices():
    first, second = generate_invoices(2, seed=0), generate_invoices(2, seed=1)
    assert first[0]["answer"] != second[0]["answer"]
    assert first[0]["image"].tobytes() != second[0]["image"].tobytes()


def test_invoice_folder_reads_back_with_the_folder_loader(tmp_path):
    records = generate_invoices(2, seed=0, out_dir=tmp_path, language="zh")
    dataset = load_records(tmp_path)
    assert [row["messages"][-1]["content"] for row in dataset] == [record["answer"] for record in records]
    assert dataset[0]["images"][0].size == (800, 520)


def test_every_chinese_character_an_invoice_draws_has_a_glyph():
    drawn = "电子发票（增值税专用发票）普通号码开票日期购买方销售方信息名称项目数量单价金额税率额合计价（大写）小备注人⊗¥"
    drawn += "".join(name for name, *_ in CATALOG["zh"]) + "".join("".join(part) for part in ZH_NAME_PARTS)
    drawn += "零壹贰叁肆伍陆柒捌玖拾佰仟万亿元角分整王芳李娜张伟刘洋陈静杨磊年月日"
    for style in fonts.STYLES:
        assert fonts.has_glyphs(fonts.load_font(18, style), drawn), style


def test_glyph_check_detects_tofu_in_a_latin_only_font():
    assert not fonts.has_glyphs(ImageFont.load_default(20), "发票")


def test_cjk_font_env_var_pointing_at_a_latin_font_is_refused(monkeypatch):
    latin = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    monkeypatch.setenv(fonts.ENV_VAR, str(latin))
    with pytest.raises(ConfigError, match="this font has no Chinese glyphs"):
        fonts.find_cjk_font()


def test_missing_cjk_font_error_says_how_to_install_one(monkeypatch):
    monkeypatch.delenv(fonts.ENV_VAR, raising=False)
    monkeypatch.setattr(fonts, "_package_font", lambda style: None)
    monkeypatch.setattr(fonts, "SYSTEM_FONTS", {"sans": (), "serif": ()})
    fonts._find.cache_clear()
    try:
        with pytest.raises(
            ConfigError, match=r"pip install pylopdf-fonts-zh-cn.*apt-get install fonts-noto-cjk"
        ):
            generate_invoices(1, language="zh")
    finally:
        fonts._find.cache_clear()


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
