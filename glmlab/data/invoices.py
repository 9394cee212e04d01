"""Synthetic invoices with exact ground truth: Chinese VAT-style (`zh`) and English (`en`).

An `Invoice` is content first (number, date, parties, line items, tax rate) and arithmetic second:
every amount is a `Decimal` in cents, line amount = quantity x unit price, the tax is rounded half-up
to the cent (per line and summed on Chinese invoices, as tax software does; on the subtotal on English
ones), and total = subtotal + tax exactly. Chinese invoices also carry 价税合计 in uppercase
(`amount_in_words_zh`). The answer is the ground-truth fields as JSON in the shape of the one invoice
schema (`glmlab.data.invoice_schema.Invoice`, also `glmlab.office.INVOICE`); amounts are strings
("1234.50") so no float ever touches them, dates are ISO ("2024-03-15") whatever the printed format.

Rendering varies what a scanner would: two layouts per language, sans or serif type, font size
(x0.9-1.1), ink colours, margins, then scan noise (blur, paper tone, grain) and a slight rotation.
Chinese text needs a CJK font: see `glmlab.data.fonts` (env `GLMLAB_CJK_FONT`, or
`pip install pylopdf-fonts-zh-cn`).
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from glmlab.data.amounts import amount_in_words_zh, format_money, money
from glmlab.data.fonts import load_font
from glmlab.data.invoice_schema import QUESTIONS
from glmlab.data.loaders import write_and_reference
from glmlab.errors import ConfigError

LANGUAGES = ("zh", "en")
PAGE_SIZE = {"zh": (800, 520), "en": (620, 800)}
TAX_RATES = {"zh": ("0.13", "0.09", "0.06", "0.03"), "en": ("0", "0.05", "0.08", "0.10", "0.20")}
# (name, lowest and highest unit price in whole currency units, most units per line)
CATALOG = {
    "zh": (
        ("*纸制品*A4打印纸", 20, 60, 20),
        ("*计算机配套产品*无线鼠标", 49, 199, 10),
        ("*信息技术服务*技术服务费", 500, 20000, 1),
        ("*办公设备*激光打印机", 899, 4999, 3),
        ("*运输服务*国内运输费", 100, 3000, 1),
        ("*餐饮服务*餐饮费", 50, 2000, 1),
        ("*文具*中性笔", 2, 10, 50),
        ("*电子计算机*笔记本电脑", 3999, 12999, 5),
        ("*现代服务*咨询服务费", 1000, 50000, 1),
        ("*日用品*桶装饮用水", 15, 40, 30),
    ),
    "en": (
        ("Printer paper A4 (box)", 15, 45, 20),
        ("Wireless mouse", 12, 60, 10),
        ("Consulting (hours)", 80, 200, 40),
        ("Laptop computer", 600, 2500, 5),
        ("Office chair", 90, 400, 8),
        ("Software license", 50, 1200, 10),
        ("Shipping and handling", 10, 150, 1),
        ("Toner cartridge", 30, 120, 6),
        ("USB-C cable", 5, 25, 30),
        ("Monitor 27-inch", 180, 600, 4),
    ),
}
ZH_NAME_PARTS = (
    ("北京", "上海", "深圳", "杭州", "成都", "武汉", "南京", "西安"),
    ("华信", "鼎盛", "恒通", "瑞丰", "汇智", "嘉禾", "博远", "天成", "金桥", "新元"),
    ("科技", "贸易", "物流", "文化传媒", "电子", "建材", "信息技术", "商贸"),
    ("有限公司",),
)
EN_NAME_PARTS = (
    ("Acme", "Northwind", "Bluebird", "Summit", "Redwood", "Harbor", "Pioneer", "Evergreen"),
    ("Supplies", "Trading", "Consulting", "Logistics", "Systems", "Industries", "Solutions"),
    ("Ltd", "Inc.", "LLC", "GmbH", "Co."),
)
ZH_CLERKS = ("王芳", "李娜", "张伟", "刘洋", "陈静", "杨磊")
EN_DATE_FORMATS = ("%Y-%m-%d", "%B %d, %Y", "%d/%m/%Y", "%d %b %Y")
INKS = ((20, 20, 20), (30, 30, 60), (40, 40, 40))
FRAME_COLORS = {
    "zh": ((150, 80, 40), (120, 60, 40), (30, 30, 30)),
    "en": ((30, 30, 30), (40, 70, 120), (90, 90, 90)),
}


@dataclass(frozen=True)
class LineItem:
    """One invoice line; `unit_price` in currency units, exact to the cent."""

    name: str
    quantity: int
    unit_price: Decimal

    @property
    def amount(self) -> Decimal:
        return money(self.quantity * self.unit_price)


@dataclass(frozen=True)
class Invoice:
    """The content of one invoice; every derived amount is computed, never stored."""

    language: str
    number: str
    date: datetime.date
    seller: str
    buyer: str
    items: tuple[LineItem, ...]
    tax_rate: Decimal

    def line_tax(self, item: LineItem) -> Decimal:
        return money(item.amount * self.tax_rate)

    @property
    def subtotal(self) -> Decimal:
        return sum((item.amount for item in self.items), Decimal("0.00"))

    @property
    def tax(self) -> Decimal:
        """Chinese invoices sum the rounded tax of each line; English ones round the tax on the subtotal."""
        if self.language == "zh":
            return sum((self.line_tax(item) for item in self.items), Decimal("0.00"))
        return money(self.subtotal * self.tax_rate)

    @property
    def total(self) -> Decimal:
        return self.subtotal + self.tax

    @property
    def tax_rate_text(self) -> str:
        return f"{(self.tax_rate * 100).normalize():f}%"

    def fields(self) -> dict[str, Any]:
        """The ground truth: what the answer JSON holds (amounts as strings, date ISO)."""
        items = [
            {
                "name": item.name,
                "quantity": item.quantity,
                "unit_price": format_money(item.unit_price),
                "amount": format_money(item.amount),
            }
            for item in self.items
        ]
        fields = {
            "invoice_number": self.number,
            "date": self.date.isoformat(),
            "seller": self.seller,
            "buyer": self.buyer,
            "items": items,
            "subtotal": format_money(self.subtotal),
            "tax_rate": self.tax_rate_text,
            "tax": format_money(self.tax),
            "total": format_money(self.total),
        }
        if self.language == "zh":
            fields["total_in_words"] = amount_in_words_zh(self.total)
        return fields


@dataclass(frozen=True)
class InvoiceStyle:
    """How one invoice is drawn: chosen per invoice by the seeded generator."""

    layout: int  # 0 or 1: the two layouts of each language
    font_style: str  # "sans" or "serif"
    scale: float  # font size factor
    ink: tuple[int, int, int]  # filled-in data
    frame: tuple[int, int, int]  # printed form: labels and lines
    margin: int


def generate_invoices(
    n: int,
    seed: int = 0,
    out_dir: str | Path | None = None,
    *,
    language: str = "zh",
    noise: bool = True,
    max_rotation_deg: float = 1.5,
    max_items: int = 4,
) -> list[dict[str, Any]]:
    """`n` invoice records in `language` ("zh" or "en"), deterministic given `seed`.

    noise: add scan blur, paper tone and grain. max_rotation_deg: largest tilt either way (0: straight).
    max_items: most line items per invoice (1..6). With `out_dir`, PNGs and data.jsonl are written there.
    """
    if language not in LANGUAGES:
        raise ConfigError(f"language={language!r}: expected one of {LANGUAGES}.")
    if not 1 <= max_items <= 6:
        raise ConfigError(f"max_items={max_items}: expected 1..6 (more lines do not fit the page).")
    if not 0 <= max_rotation_deg <= 5:
        raise ConfigError(f"max_rotation_deg={max_rotation_deg}: expected 0..5 degrees.")
    rng = np.random.default_rng(seed)
    records = []
    for index in range(n):
        invoice = make_invoice(rng, language, max_items)
        style = _pick_style(rng, language)
        image = render_invoice(invoice, style)
        angle = float(rng.uniform(-max_rotation_deg, max_rotation_deg)) if max_rotation_deg else 0.0
        image = _scan(image, rng, noise=noise, angle=angle)
        fields = invoice.fields()
        records.append(
            {
                "id": f"invoice-{language}-s{seed}-{index:05d}",
                "image": image,
                "question": QUESTIONS[language],
                "answer": json.dumps(fields, ensure_ascii=False),
                "metadata": {
                    "question_type": "extraction",
                    "answer_type": "open",
                    "language": language,
                    "fields": fields,
                    "layout": style.layout,
                    "font_style": style.font_style,
                    "rotation_deg": round(angle, 3),
                },
            }
        )
    return write_and_reference(records, out_dir)


def make_invoice(rng: np.random.Generator, language: str, max_items: int = 4) -> Invoice:
    """Random but plausible invoice content."""
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    parts = ZH_NAME_PARTS if language == "zh" else EN_NAME_PARTS
    joiner = "" if language == "zh" else " "
    seller = joiner.join(pick(options) for options in parts)
    buyer = seller
    while buyer == seller:
        buyer = joiner.join(pick(options) for options in parts)
    catalog = CATALOG[language]
    chosen = rng.permutation(len(catalog))[: int(rng.integers(1, max_items + 1))]
    items = []
    for index in chosen:
        name, low, high, most = catalog[int(index)]
        cents = int(rng.integers(low * 100, high * 100 + 1))
        items.append(LineItem(name, int(rng.integers(1, most + 1)), Decimal(cents) / 100))
    date = datetime.date(2023, 1, 1) + datetime.timedelta(days=int(rng.integers(0, 730)))
    if language == "zh":
        number = "".join(str(int(digit)) for digit in rng.integers(0, 10, 20))
    else:
        number = f"INV-{date.year}-{int(rng.integers(1, 100000)):05d}"
    return Invoice(language, number, date, seller, buyer, tuple(items), Decimal(pick(TAX_RATES[language])))


def _pick_style(rng: np.random.Generator, language: str) -> InvoiceStyle:
    frames = FRAME_COLORS[language]
    return InvoiceStyle(
        layout=int(rng.integers(2)),
        font_style=("sans", "serif")[int(rng.integers(2))],
        scale=float(rng.uniform(0.9, 1.1)),
        ink=INKS[int(rng.integers(len(INKS)))],
        frame=frames[int(rng.integers(len(frames)))],
        margin=int(rng.integers(24, 36)),
    )


def render_invoice(invoice: Invoice, style: InvoiceStyle) -> Image.Image:
    """Draw an invoice on a white page (no scan effects)."""
    image = Image.new("RGB", PAGE_SIZE[invoice.language], (255, 255, 255))
    page = _Page(ImageDraw.Draw(image), style, cjk=invoice.language == "zh")
    (_draw_zh if invoice.language == "zh" else _draw_en)(invoice, page)
    return image


class _Page:
    """Text and lines in the invoice's style; sizes are scaled by the style's font factor."""

    def __init__(self, draw: ImageDraw.ImageDraw, style: InvoiceStyle, cjk: bool):
        self.draw, self.style, self.cjk = draw, style, cjk

    def text(
        self, xy: tuple[float, float], text: str, size: int, *, anchor: str = "la", form: bool = False
    ) -> None:
        font = load_font(round(size * self.style.scale), self.style.font_style, cjk=self.cjk)
        self.draw.text(xy, text, font=font, anchor=anchor, fill=self.style.frame if form else self.style.ink)

    def line(self, points: list[tuple[float, float]], width: int = 1) -> None:
        self.draw.line(points, fill=self.style.frame, width=width)

    def box(self, box: tuple[float, float, float, float], width: int = 1) -> None:
        self.draw.rectangle(box, outline=self.style.frame, width=width)


def _draw_zh(invoice: Invoice, page: _Page) -> None:
    """A 电子发票 (fully digitalised VAT invoice) page: layout 0 puts both parties side by side at the
    top, layout 1 puts the buyer above the items and the seller below the totals."""
    width, height = PAGE_SIZE["zh"]
    m, layout = page.style.margin, page.style.layout
    title = ("电子发票（增值税专用发票）", "电子发票（普通发票）")[layout]
    page.text((width / 2, 22), title, 26, anchor="ma", form=True)
    page.line([(width / 2 - 170, 58), (width / 2 + 170, 58)], width=2)
    page.text((width - m - 250, 66), "发票号码：", 14, form=True)
    page.text((width - m, 66), invoice.number, 14, anchor="ra")
    page.text((width - m - 250, 88), "开票日期：", 14, form=True)
    page.text((width - m, 88), invoice.date.strftime("%Y年%m月%d日"), 14, anchor="ra")
    top, bottom = 114, height - 56
    page.box((m, top, width - m, bottom), width=2)
    y = top
    if layout == 0:
        middle = width / 2
        page.line([(middle, top), (middle, top + 70)])
        _zh_party(page, m + 8, y + 8, "购买方", invoice.buyer)
        _zh_party(page, middle + 8, y + 8, "销售方", invoice.seller)
        y += 70
    else:
        _zh_party(page, m + 8, y + 8, "购买方", invoice.buyer)
        y += 60
    page.line([(m, y), (width - m, y)])
    y = _zh_items(invoice, page, y)
    page.text((m + 10, y + 8), "价税合计（大写）", 15, form=True)
    page.text((m + 150, y + 8), "⊗" + amount_in_words_zh(invoice.total), 15)
    page.text((width - m - 190, y + 8), "（小写）", 15, form=True)
    page.text((width - m - 12, y + 8), f"¥{format_money(invoice.total)}", 15, anchor="ra")
    y += 36
    page.line([(m, y), (width - m, y)])
    if layout == 1:
        _zh_party(page, m + 8, y + 8, "销售方", invoice.seller)
    else:
        page.text((m + 10, y + 8), "备注", 14, form=True)
    page.text(
        (m + 10, bottom + 14),
        "开票人：" + ZH_CLERKS[len(invoice.number + invoice.buyer) % len(ZH_CLERKS)],
        14,
    )


def _zh_party(page: _Page, x: float, y: float, role: str, name: str) -> None:
    page.text((x, y), f"{role}信息", 13, form=True)
    page.text((x, y + 22), "名称：", 15, form=True)
    page.text((x + 50, y + 22), name, 15)


def _zh_items(invoice: Invoice, page: _Page, y: float) -> float:
    """The items table with its 合计 row; returns the y below it."""
    width = PAGE_SIZE["zh"][0]
    m = page.style.margin
    right = width - m
    columns = (
        ("项目名称", m + 10, "la"),
        ("数量", m + 330, "ra"),
        ("单价", m + 430, "ra"),
        ("金额", m + 540, "ra"),
        ("税率", m + 610, "ra"),
        ("税额", right - 12, "ra"),
    )
    for label, x, anchor in columns:
        page.text((x, y + 6), label, 14, anchor=anchor, form=True)
    y += 28
    for item in invoice.items:
        cells = (
            item.name,
            str(item.quantity),
            format_money(item.unit_price),
            format_money(item.amount),
            invoice.tax_rate_text,
            format_money(invoice.line_tax(item)),
        )
        for cell, (_, x, anchor) in zip(cells, columns, strict=True):
            page.text((x, y + 4), cell, 14, anchor=anchor)
        y += 26
    y = max(y, 300)
    page.line([(m, y), (right, y)])
    page.text((m + 10, y + 8), "合    计", 14, form=True)
    page.text((columns[3][1], y + 8), f"¥{format_money(invoice.subtotal)}", 14, anchor="ra")
    page.text((columns[5][1], y + 8), f"¥{format_money(invoice.tax)}", 14, anchor="ra")
    y += 32
    page.line([(m, y), (right, y)])
    return y


def _draw_en(invoice: Invoice, page: _Page) -> None:
    """An English invoice: layout 0 has the title left and the seller right, layout 1 a centred
    header; the date format varies (ISO, 'March 15, 2024', '15/03/2024', '15 Mar 2024')."""
    width, _ = PAGE_SIZE["en"]
    m, layout = page.style.margin, page.style.layout
    date_format = EN_DATE_FORMATS[(invoice.date.toordinal() + layout) % len(EN_DATE_FORMATS)]
    if layout == 0:
        page.text((m, 40), "INVOICE", 34, form=True)
        page.text((width - m, 28), "From", 12, anchor="ra", form=True)
        page.text((width - m, 48), invoice.seller, 16, anchor="ra")
    else:
        page.text((width / 2, 34), invoice.seller, 20, anchor="ma")
        page.text((width / 2, 70), "INVOICE", 28, anchor="ma", form=True)
    page.line([(m, 112), (width - m, 112)], width=2)
    page.text((m, 130), "Invoice No.:", 15, form=True)
    page.text((m + 120, 130), invoice.number, 15)
    page.text((m, 156), "Date:", 15, form=True)
    page.text((m + 120, 156), invoice.date.strftime(date_format), 15)
    page.text((m, 198), "Bill To:", 15, form=True)
    page.text((m, 222), invoice.buyer, 16)
    y = _en_items(invoice, page, 280)
    for label, value, size in (
        ("Subtotal", invoice.subtotal, 15),
        (f"Tax ({invoice.tax_rate_text})", invoice.tax, 15),
        ("Total", invoice.total, 19),
    ):
        page.text((width - m - 200, y), label, size, form=True)
        page.text((width - m - 8, y), f"${format_money(value, thousands=True)}", size, anchor="ra")
        y += 30
    page.text((m, 740), "Thank you for your business.", 13, form=True)


def _en_items(invoice: Invoice, page: _Page, y: float) -> float:
    width = PAGE_SIZE["en"][0]
    m = page.style.margin
    columns = (
        ("Description", m + 8, "la"),
        ("Qty", m + 330, "ra"),
        ("Unit price", m + 440, "ra"),
        ("Amount", width - m - 8, "ra"),
    )
    page.box((m, y, width - m, y + 30))
    for label, x, anchor in columns:
        page.text((x, y + 7), label, 14, anchor=anchor, form=True)
    y += 38
    for item in invoice.items:
        cells = (
            item.name,
            str(item.quantity),
            format_money(item.unit_price, thousands=True),
            format_money(item.amount, thousands=True),
        )
        for cell, (_, x, anchor) in zip(cells, columns, strict=True):
            page.text((x, y), cell, 14, anchor=anchor)
        y += 28
        if page.style.layout == 1:
            page.line([(m, y - 6), (width - m, y - 6)])
    page.line([(m, y + 4), (width - m, y + 4)], width=2)
    return y + 20


def _scan(image: Image.Image, rng: np.random.Generator, *, noise: bool, angle: float) -> Image.Image:
    """What a desk scanner does to a page: a slight tilt, then blur, paper tone and grain."""
    if angle:
        image = image.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=(255, 255, 255))
    if not noise:
        return image
    image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.2, 0.8))))
    pixels = np.asarray(image, dtype=np.float32) * float(rng.uniform(0.92, 1.0)) + float(rng.uniform(0, 12))
    pixels += rng.normal(0.0, float(rng.uniform(2.0, 7.0)), pixels.shape[:2])[..., None]
    return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8))
