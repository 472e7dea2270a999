"""A small, safe Markdown subset for model answers shown to annotators.

Everything is HTML-escaped first; the only tags ever produced are the ones written
here (no attributes from the text, except a sanitized ``language-*`` class), so an
answer cannot inject markup, scripts or links. Supported: fenced code blocks
(``` or ~~~) as <pre><code>, inline `code`, **bold**, *italic*, headings, bullet and
numbered lists, block quotes, paragraphs with line breaks. Links stay plain text.
"""

from __future__ import annotations

import re
from html import escape

from django.utils.safestring import SafeString, mark_safe

FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
BULLET = re.compile(r"^\s{0,3}[-*+]\s+(.*)$")
NUMBERED = re.compile(r"^\s{0,3}\d{1,9}[.)]\s+(.*)$")
QUOTE = re.compile(r"^\s{0,3}>\s?(.*)$")
LANG = re.compile(r"[^A-Za-z0-9_+#.-]")
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|__(?=\S)(.+?)(?<=\S)__")
ITALIC = re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])")


def _emphasis(escaped: str) -> str:
    text = BOLD.sub(lambda m: f"<strong>{m.group(1) or m.group(2)}</strong>", escaped)
    return ITALIC.sub(r"<em>\1</em>", text)


def inline(text: str) -> str:
    """Escape a line of text and apply inline code and emphasis."""
    out, last = [], 0
    for match in CODE_SPAN.finditer(text):
        out.append(_emphasis(escape(text[last : match.start()])))
        out.append(f"<code>{escape(match.group(2).strip())}</code>")
        last = match.end()
    out.append(_emphasis(escape(text[last:])))
    return "".join(out)


def render(text: str) -> SafeString:
    """The answer as safe HTML; an empty answer says so instead of showing nothing."""
    if not text or not text.strip():
        return mark_safe('<p class="muted">(empty answer)</p>')
    html: list[str] = []
    paragraph: list[str] = []
    list_tag: str | None = None
    quote: list[str] = []

    def flush() -> None:
        nonlocal list_tag
        if paragraph:
            html.append("<p>" + "<br>".join(inline(line) for line in paragraph) + "</p>")
            paragraph.clear()
        if list_tag:
            html.append(f"</{list_tag}>")
            list_tag = None
        if quote:
            html.append("<blockquote>" + "<br>".join(inline(q) for q in quote) + "</blockquote>")
            quote.clear()

    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = FENCE.match(line)
        if fence:
            flush()
            marker, lang = fence.group(1), LANG.sub("", fence.group(2))[:30]
            body: list[str] = []
            i += 1
            # An unclosed fence runs to the end, as in CommonMark.
            while i < len(lines) and not lines[i].strip().startswith(marker):
                body.append(lines[i])
                i += 1
            cls = f' class="language-{lang}"' if lang else ""
            html.append(f"<pre><code{cls}>{escape(chr(10).join(body))}</code></pre>")
            i += 1
            continue
        if not line.strip():
            flush()
        elif heading := HEADING.match(line):
            flush()
            level = min(6, len(heading.group(1)) + 2)  # h3..h6: answers sit under the page's h2
            html.append(f"<h{level}>{inline(heading.group(2))}</h{level}>")
        elif (item := BULLET.match(line)) or (item := NUMBERED.match(line)):
            tag = "ul" if BULLET.match(line) else "ol"
            if paragraph or quote or (list_tag and list_tag != tag):
                flush()
            if not list_tag:
                html.append(f"<{tag}>")
                list_tag = tag
            html.append(f"<li>{inline(item.group(1))}</li>")
        elif quoted := QUOTE.match(line):
            if paragraph or list_tag:
                flush()
            quote.append(quoted.group(1))
        elif list_tag and line.startswith((" ", "\t")):
            # A continuation line of the last list item.
            html[-1] = html[-1].removesuffix("</li>") + "<br>" + inline(line.strip()) + "</li>"
        else:
            if list_tag or quote:
                flush()
            paragraph.append(line)
        i += 1
    flush()
    return mark_safe("\n".join(html))  # noqa: S308 - built from escaped text only
