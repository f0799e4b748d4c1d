"""The report as a list of blocks (headings, paragraphs, tables, plots), rendered to Markdown
and to one self-contained HTML page (inline CSS, no script, PNGs by relative path)."""

import html
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from hear_contrastune.comparison.report.tables import Table


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class TableBlock:
    table: Table
    title: str = ""
    note: str = ""


@dataclass(frozen=True)
class Plot:
    src: str  # relative to the run folder
    caption: str


Block = Heading | Paragraph | Bullets | TableBlock | Plot


def markdown(blocks: list[Block]) -> str:
    """The report as GitHub-flavoured markdown."""
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Paragraph):
            out.append(b.text)
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, TableBlock):
            bold = b.table.bold()
            lines = [f"**{b.title}**", ""] if b.title else []
            lines.append("| " + " | ".join(map(esc, b.table.header)) + " |")
            names = b.table.names
            lines.append("|" + "|".join([":---"] * names
                                        + ["---:"] * (len(b.table.header) - names)) + "|")
            for r, row in enumerate(b.table.rows):
                cells = [f"**{esc(c.text)}**" if (r, i) in bold else esc(c.text)
                         for i, c in enumerate(row)]
                lines.append("| " + " | ".join(cells) + " |")
            if b.note:
                lines += ["", b.note]
            out.append("\n".join(lines))
        else:
            out.append(f"![{Path(b.src).stem}]({quote(b.src)})\n\n*{b.caption}*")
    return "\n\n".join(out) + "\n"


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 1200px; margin: 2em auto; padding: 0 1em; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.4em 0 1.4em; font-size: 0.92em; }
caption { text-align: left; font-weight: 600; padding-bottom: 0.3em; }
th, td { border: 1px solid #d0d0d0; padding: 4px 10px; text-align: right;
         font-variant-numeric: tabular-nums; white-space: nowrap; }
th { background: #f3f3f3; }
th.name, td.name { text-align: left; }
td.best { font-weight: 700; background: #eef6ee; }
p.note { color: #555; font-size: 0.9em; margin-top: -1em; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
"""


def html_cell(tag: str, text: str, classes: list[str]) -> str:
    attr = f" class=\"{' '.join(classes)}\"" if classes else ""
    return f"<{tag}{attr}>{html.escape(text)}</{tag}>"


def html_table(block: TableBlock) -> str:
    """A table with its title as caption; name columns and the best cells get CSS classes."""
    table, e = block.table, html.escape
    bold = table.bold()
    rows = ["".join(html_cell("th", h, ["name"] * (i < table.names))
                    for i, h in enumerate(table.header))]
    rows += ["".join(html_cell("td", c.text,
                               ["name"] * (i < table.names) + ["best"] * ((r, i) in bold))
                     for i, c in enumerate(row))
             for r, row in enumerate(table.rows)]
    caption = f"<caption>{e(block.title)}</caption>" if block.title else ""
    note = f"\n<p class=\"note\">{e(block.note)}</p>" if block.note else ""
    return f"<table>{caption}" + "".join(f"<tr>{r}</tr>" for r in rows) + f"</table>{note}"


def html_page(blocks: list[Block], title: str) -> str:
    """The report as one self-contained HTML page (inline CSS, no script)."""
    e = html.escape
    body = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{e(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            body.append(f"<p>{e(b.text)}</p>")
        elif isinstance(b, Bullets):
            body.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, TableBlock):
            body.append(html_table(b))
        else:
            body.append(f"<figure><img src=\"{e(quote(b.src))}\" alt=\"{e(b.caption)}\">"
                        f"<figcaption>{e(b.caption)}</figcaption></figure>")
    return ("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
