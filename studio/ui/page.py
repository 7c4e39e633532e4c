"""The page around the studio: theme, header with the logo, and the read-only share page route (no login needed).

The share page is plain server-rendered HTML (no Gradio), so a link works logged out and stays light; Markdown is
rendered by markdown-it with raw HTML disabled (escaped), so shared text cannot inject markup.
"""
import html
from pathlib import Path

import gradio as gr
from fastapi.responses import HTMLResponse
from markdown_it import MarkdownIt

from studio.store.store import NotFound
from studio.ui.views_html import share_html

ASSETS = Path(__file__).resolve().parents[2] / "assets"
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"]
MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]
_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


def theme() -> gr.themes.Base:
    """Our theme: violet accent, slate neutrals, system fonts (no web-font download)."""
    return gr.themes.Soft(primary_hue="violet", secondary_hue="pink", neutral_hue="slate", radius_size="lg",
                          font=SYSTEM_FONTS, font_mono=MONO_FONTS).set(
        button_primary_background_fill="linear-gradient(90deg, #6d5efc, #e2497a)",
        button_primary_background_fill_hover="linear-gradient(90deg, #5b4cf0, #d23a6b)",
        button_primary_text_color="#ffffff", block_radius="14px")


def logo_svg() -> str:
    """The logo as inline SVG markup."""
    return (ASSETS / "logo.svg").read_text(encoding="utf-8")


def header_html(user_html: str) -> str:
    """Logo, name, tagline and (when logged in) who is signed in."""
    return (f'<div id="m1-header">{logo_svg()}<h1>M1 Studio</h1>'
            f'<span class="tag">MiniMax-M1 · reasoning · 1M-token context</span>{user_html}</div>')


def render_markdown(text: str) -> str:
    """Markdown → HTML with raw HTML escaped."""
    return _markdown.render(text or "")


def share_page(shared: dict) -> str:
    """The whole share page document."""
    css = (ASSETS / "share.css").read_text(encoding="utf-8")
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" "
            f"content=\"width=device-width, initial-scale=1\"><meta name=\"robots\" content=\"noindex\">"
            f"<title>{_escape(shared['title'])} · M1 Studio</title><style>{css}</style></head><body>"
            f"<main>{logo_svg()}{share_html(shared, render_markdown)}</main></body></html>")


def add_share_route(app, store) -> None:
    """GET /share/{token}: the shared conversation, or 404 when the link was revoked or never existed."""

    @app.get("/share/{token}", response_class=HTMLResponse, include_in_schema=False)
    def shared_conversation(token: str) -> HTMLResponse:
        try:
            return HTMLResponse(share_page(store.shared_session(token)))
        except NotFound as exc:
            return HTMLResponse(f"<!doctype html><title>Not found</title><p>{_escape(str(exc))}.</p>",
                                status_code=404)


def _escape(text: str) -> str:
    return html.escape(text)

