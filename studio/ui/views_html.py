"""HTML fragments of the studio page: the context budget meter, document chips, progress bars, the share page.

Every user-supplied string goes through html.escape; classes are styled by assets/style.css.
"""
import html

from studio.ui.icons import icon
from studio.ui.views import human_seconds, human_tokens

WARN_AT, DANGER_AT = 0.75, 0.90
_SEGMENTS = (("system", "System"), ("documents_total", "Documents"), ("history", "History"),
             ("reserved_output", "Reserved output"))


def budget_html(budget: dict) -> str:
    """The context meter: a stacked bar (system / documents / history / reserved output) against the window,
    "312k / 1M tokens", a warning at 75% and 90%, and a blocking message with the overflow when over."""
    window = budget["window"]
    used = dict(budget, history=budget["history"] + budget.get("template", 0))
    fraction = budget["total"] / window
    level = "over" if not budget["fits"] else "danger" if fraction >= DANGER_AT else \
        "warn" if fraction >= WARN_AT else "ok"
    bars, legend = [], []
    for key, label in _SEGMENTS:
        width = min(100.0, 100.0 * used[key] / window)
        bars.append(f'<span class="seg seg-{key}" style="width:{width:.3f}%" title="{label}: '
                    f'{used[key]:,} tokens"></span>')
        legend.append(f'<span class="key"><i class="dot seg-{key}"></i>{label} {human_tokens(used[key])}</span>')
    summary = f"{human_tokens(budget['total'])} / {human_tokens(window)} tokens ({100 * fraction:.0f}%)"
    message = ""
    if level == "over":
        message = (f'<div class="m1-meter-msg">Over the context window by {budget["overflow"]:,} tokens. '
                   "Remove a document, lower <b>max output tokens</b>, or start a new chat to send.</div>")
    elif level in ("warn", "danger"):
        message = f'<div class="m1-meter-msg">{human_tokens(budget["remaining"])} tokens left in the window.</div>'
    return (f'<div class="m1-meter {level}" data-total="{budget["total"]}" data-fits="{str(budget["fits"]).lower()}">'
            f'<div class="m1-meter-head"><span>Context</span><span class="m1-meter-sum">{summary}</span></div>'
            f'<div class="m1-meter-bar">{"".join(bars)}</div>'
            f'<div class="m1-meter-legend">{"".join(legend)}</div>{message}</div>')


def chips_html(attachments: list[dict]) -> str:
    """Chips for documents waiting to go with the next message: name, kind and token count."""
    if not attachments:
        return ""
    chips = []
    for doc in attachments:
        approx = "~" if doc.get("tokens_estimated") else ""
        chips.append(f'<span class="m1-chip" title="{html.escape(doc["kind"])}">{icon("attach")} '
                     f'<span class="m1-chip-name">{html.escape(doc["name"])}</span> '
                     f'<span class="m1-chip-tokens">{approx}{human_tokens(doc["num_tokens"])} tokens</span></span>')
    return f'<div class="m1-chips">{"".join(chips)}</div>'


def progress_html(verb: str, done: int, total: int, eta: float | None, unit: str = "tokens") -> str:
    """A progress bar with "reading 412k / 830k tokens, ~95 s" (verb: reading / prefilling / …)."""
    share = 0.0 if total <= 0 else min(1.0, done / total)
    count = f"{human_tokens(done)} / {human_tokens(total)} {unit}" if unit == "tokens" else \
        f"{done:,} / {total:,} {unit}"
    left = f", ~{human_seconds(eta)}" if eta else ""
    return (f'<div class="m1-progress" role="progressbar" aria-valuenow="{100 * share:.0f}" aria-valuemin="0" '
            f'aria-valuemax="100"><div class="m1-progress-label">{html.escape(verb)} {count}{left}</div>'
            f'<div class="m1-progress-track"><div class="m1-progress-fill" style="width:{100 * share:.1f}%">'
            f'</div></div></div>')


def error_html(message: str) -> str:
    """A visible, dismissable-by-next-action error line under the composer."""
    return f'<div class="m1-error" role="alert">{icon("warning")} {html.escape(message)}</div>'


def share_html(shared: dict, render_markdown) -> str:
    """The read-only page behind a share link. render_markdown(text) -> safe HTML (e.g. Gradio's renderer)."""
    title = html.escape(shared["title"])
    parts = [f"<header><h1>{title}</h1><p class=\"sub\">A conversation shared from M1 Studio · read-only</p>"
             "</header>"]
    if shared["documents"]:
        docs = []
        for doc in shared["documents"]:
            body = f"<pre>{html.escape(doc['text'])}</pre>" if "text" in doc else ""
            docs.append(f"<details><summary>{icon('attach')} {html.escape(doc['name'])} · {human_tokens(doc['num_tokens'])} tokens"
                        f"</summary>{body}</details>" if body else
                        f"<div class=\"doc\">{icon('attach')} {html.escape(doc['name'])} · {human_tokens(doc['num_tokens'])} "
                        "tokens</div>")
        parts.append(f'<section class="docs">{"".join(docs)}</section>')
    for message in shared["messages"]:
        role = "user" if message["role"] == "user" else "assistant"
        thought = ""
        if message.get("reasoning"):
            thought = (f"<details class=\"thought\"><summary>Thinking</summary>"
                       f"{render_markdown(message['reasoning'])}</details>")
        parts.append(f'<article class="msg {role}"><div class="who">{role.capitalize()}</div>{thought}'
                     f'<div class="body">{render_markdown(message["content"])}</div></article>')
    return "".join(parts)
