"""Model answers shown to annotators, rendered from Markdown with markdown-it-py.

CommonMark with raw HTML disabled (it is shown as text, escaped), links, images and
autolinks turned off (an answer's link stays plain text: annotators judge text, and
nothing in an answer should send them elsewhere), line breaks kept as in the answer.
Headings are shifted down two levels: answers sit under the page's own headings.

markdown-it-py parses in linear time, unlike the regular expressions this replaced (a
24 KB line took them 3.6 s); the text is also cut at ``MAX_CHARS`` so that one answer
cannot make a page of megabytes.
"""

from __future__ import annotations

from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

MAX_CHARS = 100_000

_md = MarkdownIt("commonmark", {"html": False, "breaks": True}).disable(
    ["link", "image", "autolink"]
)


def render(text: str) -> SafeString:
    """The answer as safe HTML; an empty answer says so instead of showing nothing."""
    if not text or not text.strip():
        return mark_safe('<p class="muted">(empty answer)</p>')
    cut = len(text) > MAX_CHARS
    tokens = _md.parse(text[:MAX_CHARS])
    for token in tokens:
        if token.type in ("heading_open", "heading_close"):
            token.tag = f"h{min(6, int(token.tag[1]) + 2)}"
    html = _md.renderer.render(tokens, _md.options, {}).strip()
    if cut:
        html += f'\n<p class="muted">(cut: the answer is longer than {MAX_CHARS:,} characters)</p>'
    return mark_safe(html)  # noqa: S308 - markdown-it escapes the text; raw HTML is off
