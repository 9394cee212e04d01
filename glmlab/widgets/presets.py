"""Preset prompts of the VQA widget: the everyday questions researchers ask GLM-V, in English and Chinese.

Each preset is (menu label, prompt). The grounding prompt asks for the `[x1, y1, x2, y2]` form that GLM-V
answers inside `<|begin_of_box|>` tags (0-1000 scale), which the widget draws on the preview. The
invoice presets ask the invoice generator's own questions, whose keys are the one invoice schema's
(`glmlab.office.INVOICE`), so a widget answer, an eval answer and `glmlab.office.extract` share fields.
"""

from __future__ import annotations

from glmlab.data.invoice_schema import QUESTIONS as INVOICE_QUESTIONS

PRESETS: list[tuple[str, str]] = [
    ("Describe the image", "Describe this image in detail."),
    ("描述图片", "请详细描述这张图片。"),
    ("Read all text (OCR)", "Read all the text in this image. Keep the original line breaks and layout."),
    ("文字识别（OCR）", "识别图片中的全部文字，保持原有的换行和排版。"),
    ("Invoice fields as JSON", INVOICE_QUESTIONS["en"] + " Output only the JSON."),
    ("发票字段（JSON）", INVOICE_QUESTIONS["zh"] + "只输出 JSON。"),
    ("Count the objects", "How many objects are in this image? Give the number first, then list them."),
    ("数一数物体", "图中有多少个物体？先给出数量，再逐一列出。"),
    (
        "Ground the main object (box)",
        "Find the main object in the image and give its bounding box as [x1, y1, x2, y2].",
    ),
    ("框出主要物体", "找出图中的主要物体，并给出它的边界框 [x1, y1, x2, y2]。"),
    ("Table to Markdown", "Convert the table in this image to a Markdown table."),
    ("表格转 Markdown", "把图中的表格转换成 Markdown 表格。"),
    ("Chart: key numbers", "What does this chart show? List its key numbers and the main trend."),
    ("图表要点", "这张图表展示了什么？列出关键数字和主要趋势。"),
    (
        "Medical image findings (research only)",
        "Describe the findings in this medical image. This is for research, not for diagnosis.",
    ),
    ("医学影像所见（仅供研究）", "描述这张医学影像中的所见。仅供研究，不用于诊断。"),
]
