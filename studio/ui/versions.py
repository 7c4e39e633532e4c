"""Version links under each message that has siblings: "‹ 2/3 ›", acting on that message.

The links are Markdown links with `#m1v:<step>:<message id>` targets inside the chat; assets/studio.js turns a
click into an input event of the hidden #m1-version-action textbox, which ChatHandlers.version_at handles.
"""
import re

_ACTION = re.compile(r"^m1v:(-1|1):(\d+)(?::\d+)?$")


def version_links(message: dict) -> str:
    """The "‹ 2/3 ›" line of a message with siblings ('' without)."""
    count, index = message.get("sibling_count") or 1, message.get("sibling_index") or 1
    if count < 2:
        return ""
    mid = message["id"]
    return (f'<span class="m1-versions">[‹](#m1v:-1:{mid} "Previous version") {index}/{count} '
            f'[›](#m1v:1:{mid} "Next version")</span>')


def with_version_rows(rows: list[dict], ids: list[int], path: list[dict]) -> tuple[list[dict], list[int]]:
    """Chatbot rows with a version row after the last row of each message that has siblings (same role, same
    message id, so it sits in that message's bubble group)."""
    by_id = {m["id"]: m for m in path}
    out_rows, out_ids = [], []
    for i, (row, mid) in enumerate(zip(rows, ids)):
        out_rows.append(row)
        out_ids.append(mid)
        last_of_message = i + 1 == len(ids) or ids[i + 1] != mid
        links = version_links(by_id[mid]) if last_of_message and mid in by_id else ""
        if links:
            out_rows.append({"role": by_id[mid]["role"], "content": links})
            out_ids.append(mid)
    return out_rows, out_ids


def parse_action(value: str) -> tuple[int, int] | None:
    """(step, message id) of a version link click ("m1v:-1:42:<nonce>"), None for anything else."""
    match = _ACTION.match((value or "").strip())
    return (int(match.group(1)), int(match.group(2))) if match else None
