"""The M1 Studio page (Gradio 6 Blocks): components and event wiring only; handlers live in ui_chat / ui_session.

    mount_ui(app, chat, config)      # studio.server's hook, called after the API routes: the studio at /
    build_ui(StudioServices(chat, store, ...))      # the Blocks alone

`StudioServices.concurrency` is how many replies generate at once; more wait in the queue, which shows their
position on the chat.
"""
import hashlib
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from studio.ui import views
from studio.chat_settings import MAX_OUTPUT_TOKENS, SYSTEM_PRESETS
from studio.ui.chat import ChatHandlers
from studio.ui.defaults import DefaultsHandlers, preset_of
from studio.ui.icons import icon_path
from studio.ui.queue import SendQueue
from studio.ui.page import add_share_route, header_html, theme
from studio.ui.exports import add_export_route
from studio.ui.queue_guard import SessionHashGuard, gradio_user_lookup
from studio.ui.session import SessionHandlers
from studio.ui.values import DEFAULT_SETTINGS

ASSETS = Path(__file__).resolve().parents[2] / "assets"
FILE_TYPES = [".pdf", ".docx", ".xlsx", ".pptx", ".html", ".htm", ".md", ".txt", ".csv", ".tsv", ".json", ".py",
              ".js", ".ts", ".java", ".c", ".cpp", ".h", ".go", ".rs", ".rb", ".sh", ".sql", ".yaml", ".yml", ".toml",
              ".xml", ".tex", ".ipynb"]
CHAT_HEIGHT = "calc(100dvh - 370px)"  # the page fits the window: header, controls, composer and meter below
CLOSE_SIDEBAR_ON_PHONE = """() => { if (window.innerWidth < 700) {
    const bar = document.querySelector('#m1-sidebar.open .toggle-button'); if (bar) bar.click(); } }"""
DOWNLOAD_JS = """() => { let tries = 0; const grab = () => {
    const link = document.querySelector('#m1-download a[href]');
    if (link) { link.click(); } else if (tries++ < 40) { setTimeout(grab, 100); } }; setTimeout(grab, 50); }"""
LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False},
         {"left": "\\[", "right": "\\]", "display": True}, {"left": "\\(", "right": "\\)", "display": False}]


def build_ui(services) -> gr.Blocks:
    """The studio Blocks for these services (not launched; see mount_ui)."""
    sessions = SessionHandlers(services)
    defaults = DefaultsHandlers(services, sessions)
    sessions.defaults_for = defaults.settings_for  # new chats start from the user's stored defaults
    chat = ChatHandlers(services, sessions)
    engine_slots = getattr(services, "concurrency", None) or 4
    with gr.Blocks(title="M1 Studio", fill_height=True, analytics_enabled=False) as demo:
        session_id, row_ids, selected = gr.State(None), gr.State([]), gr.State(None)
        limit = gr.State(views.TRANSCRIPT_MESSAGES)
        saved = gr.BrowserState(None, storage_key="m1-studio-session", secret=_browser_secret(services))
        with gr.Sidebar(elem_id="m1-sidebar", width=300):
            new = gr.Button("+ New chat", elem_id="m1-new")
            query = gr.Textbox(placeholder="Search chats…", show_label=False, elem_id="m1-search")
            session_list = gr.Radio([], label="Chats", elem_id="m1-sessions", container=False)
            with gr.Accordion("This chat", open=False, elem_id="m1-this-chat"):
                title = gr.Textbox(label="Title (Enter renames)", elem_id="m1-title")
                with gr.Row():
                    rename = gr.Button("Rename", size="sm", elem_id="m1-rename")
                    delete = gr.Button("Delete", size="sm", variant="stop", elem_id="m1-delete")
                with gr.Row():
                    export_md = gr.Button("Export .md", size="sm", elem_id="m1-export-md")
                    export_json = gr.Button("Export .json", size="sm", elem_id="m1-export-json")
                download = gr.HTML("", elem_id="m1-download")  # a link to /export/{id}.{fmt} (studio.ui.exports)
                importer = gr.UploadButton("Import .json", file_types=[".json"], size="sm", elem_id="m1-import")
            with gr.Accordion("Share (read-only link)", open=False, elem_id="m1-share"):
                share_reasoning = gr.Checkbox(True, label="Include reasoning")
                share_documents = gr.Checkbox(False, label="Include document text")
                with gr.Row():
                    share = gr.Button("Create link", size="sm", elem_id="m1-share-create")
                    revoke = gr.Button("Revoke", size="sm", elem_id="m1-share-revoke")
                share_link = gr.Textbox(label="Link", interactive=False, elem_id="m1-share-url", buttons=["copy"])
            with gr.Accordion("Settings", open=False, elem_id="m1-settings"):
                overrides_note = gr.HTML("", elem_id="m1-overrides")
                preset = gr.Radio(list(SYSTEM_PRESETS) + ["Custom"], value=DEFAULT_SETTINGS[0],
                                  label="System prompt preset")
                system = gr.Textbox(DEFAULT_SETTINGS[1], label="System prompt", lines=3, max_lines=8)
                temperature = gr.Slider(0, 2, DEFAULT_SETTINGS[2], step=0.05, label="Temperature",
                                        elem_id="m1-temperature")
                top_p = gr.Slider(0.05, 1, DEFAULT_SETTINGS[3], step=0.01, label="Top-p")
                max_tokens = gr.Slider(16, MAX_OUTPUT_TOKENS, DEFAULT_SETTINGS[4], step=16, elem_id="m1-max-tokens",
                                       label="Max output tokens (reserved in the window)")
                thinking_budget = gr.Number(DEFAULT_SETTINGS[5], precision=0, minimum=0,
                                            label="Thinking budget (tokens, 0 = unlimited)",
                                            elem_id="m1-thinking-budget")
                replay = gr.Checkbox(DEFAULT_SETTINGS[6], label="Replay earlier thinking to the model")
                with gr.Row():
                    save_defaults = gr.Button("Save as my defaults for new chats", size="sm",
                                              elem_id="m1-save-defaults")
                    use_defaults = gr.Button("Use my defaults here", size="sm", elem_id="m1-use-defaults")
        whoami = gr.HTML(header_html(""), elem_id="m1-top")
        replicas = getattr(getattr(services, "chat", None), "engine", None)
        replicas = getattr(replicas, "replicas", None)  # multi-replica mode: alive and sessions, on each page load
        gr.HTML(lambda: views.banner_html(random_weights=getattr(services, "random_weights", False),
                                          state_reuse=getattr(services, "state_reuse", True),
                                          model_name=getattr(services, "model_name", ""),
                                          note=getattr(services, "model_note", ""),
                                          replicas=replicas() if replicas else None), elem_id="m1-banners")
        chatbot = gr.Chatbot(elem_id="m1-chat", height=CHAT_HEIGHT, min_height=300, show_label=False,
                             editable="user",
                             latex_delimiters=LATEX, buttons=["copy", "copy_all"], feedback_options=None,
                             layout="bubble", autoscroll=True,
                             placeholder="### M1 Studio\nAsk anything, or attach long documents: the whole text "
                                         "goes into the 1M-token context.")
        with gr.Row(elem_id="m1-controls"):
            version = gr.Markdown("", elem_id="m1-version", elem_classes=["m1-hidden"])  # versions: under messages
            version_action = gr.Textbox("", elem_id="m1-version-action", elem_classes=["m1-hidden"],
                                        show_label=False, container=False)
            regenerate = gr.Button("Regenerate", icon=icon_path("regenerate"), size="sm", elem_id="m1-regenerate")
            answer_now = gr.Button("Answer now", icon=icon_path("answer-now"), size="sm", elem_id="m1-answer-now")
            stop = gr.Button("Stop", icon=icon_path("stop"), size="sm", variant="stop", elem_id="m1-stop")
            earlier = gr.Button("Show earlier", size="sm", elem_id="m1-earlier")
            show_reasoning = gr.Checkbox(False, label="Load earlier thinking", elem_id="m1-show-reasoning",
                                         container=False)
        progress = gr.HTML("", elem_id="m1-progress")
        with gr.Row(elem_id="m1-chips-row"):
            chips = gr.HTML("", elem_id="m1-chips")
            clear_docs = gr.Button("Remove attachments", size="sm", elem_id="m1-clear-docs", scale=0)
        queued = gr.HTML("", elem_id="m1-queued")
        composer = gr.MultimodalTextbox(elem_id="m1-composer", file_types=FILE_TYPES, file_count="multiple",
                                        placeholder="Message M1 or attach files…", label="Message",
                                        show_label=False, submit_btn=True, stop_btn=False, autofocus=True,
                                        max_lines=12)
        error = gr.HTML("", elem_id="m1-error")
        meter = gr.HTML("", elem_id="m1-meter")

        panel = [preset, system, temperature, top_p, max_tokens, thinking_budget, replay]
        view = [session_id, chatbot, row_ids, session_list, title, meter, chips, version, saved]
        stream = [progress, error, composer] + view
        engine = dict(concurrency_limit=engine_slots, concurrency_id="engine", show_progress="minimal",
                      show_progress_on=[meter])  # the queue position shows on the meter
        quick = dict(show_progress="hidden")

        demo.load(sessions.load, [saved], view + panel + [whoami], **quick).then(  # the note, even if no setting
            defaults.note, panel, [overrides_note], **quick)                       # changes from the initial ones
        demo.load(None, js=CLOSE_SIDEBAR_ON_PHONE)
        new.click(sessions.new_chat, None, view + panel, **quick)
        chatbot.clear(sessions.delete_open, [session_id], view + panel, **quick)  # the trash: "Delete this chat"
        session_list.input(sessions.switch, [session_list], view + panel, **quick)
        query.change(sessions.search, [query, session_id], [session_list], trigger_mode="always_last", **quick)
        for trigger in (rename.click, title.submit):
            trigger(sessions.rename, [session_id, title], [session_list], **quick)
        delete_armed = gr.State(None)
        delete.click(sessions.delete, [session_id, delete_armed], [delete_armed, delete] + view + panel, **quick)
        for button, fmt in ((export_md, "md"), (export_json, "json")):  # one step: the file downloads at once
            button.click(_exporter(sessions.export, fmt), [session_id], [download], **quick).then(
                None, js=DOWNLOAD_JS)
        importer.upload(sessions.import_file, [importer], view + panel, **quick)
        share.click(sessions.share, [session_id, share_reasoning, share_documents], [share_link], **quick)
        revoke.click(sessions.revoke, [session_id], [share_link], **quick)
        preset.input(lambda name: SYSTEM_PRESETS.get(name, ""), [preset], [system], **quick)
        system.change(preset_of, [system], [preset], **quick)  # edited by hand: the preset becomes "Custom"
        for control in panel:  # the note says which settings are this chat's own
            control.change(defaults.note, panel, [overrides_note], trigger_mode="always_last", **quick)
        save_defaults.click(defaults.save, panel, [overrides_note], **quick)
        use_defaults.click(defaults.reset, None, panel, **quick)
        for control in (system, max_tokens):
            control.change(sessions.meter, [session_id] + panel, [meter], trigger_mode="always_last", **quick)

        render = [session_id, show_reasoning, limit] + panel
        show_reasoning.input(sessions.refresh, render, view, **quick)
        earlier.click(lambda n: n + views.TRANSCRIPT_MESSAGES, [limit], [limit], **quick).then(
            sessions.refresh, render, view, **quick)
        composer.change(sessions.attach, [composer, session_id] + panel, stream, trigger_mode="always_last",
                        **quick)
        clear_docs.click(sessions.clear_pending, [session_id] + panel, [chips, meter], **quick)

        turn = [show_reasoning, limit] + panel
        composer.submit(SendQueue(chat).send, [composer, session_id] + turn, stream + [queued],
                        trigger_mode="multiple", **engine)  # sent while a reply streams: queued, shown
        regenerate.click(chat.regenerate, [session_id, row_ids, selected] + turn, stream, **engine)
        chatbot.retry(chat.regenerate, [session_id, row_ids, gr.State(None)] + turn, stream, **engine)
        chatbot.edit(chat.edit, [session_id, row_ids] + turn, stream, **engine)
        for trigger in (stop.click, composer.stop):
            trigger(chat.stop, [session_id], None, concurrency_limit=None, **quick)
        answer_now.click(chat.answer_now, [session_id], None, concurrency_limit=None, **quick)
        chatbot.select(chat.select, [row_ids], [selected, version], **quick)
        version_action.change(chat.version_at, [session_id, version_action] + turn, [selected] + view, **quick)
    demo.queue(default_concurrency_limit=8)
    return demo


def _browser_secret(services) -> str:
    """A secret for the browser-stored session id that survives restarts (the id alone opens nothing: sessions
    are checked against the logged-in user)."""
    return hashlib.sha256(f"m1-studio:{getattr(services.store, 'path', '')}".encode()).hexdigest()


def _exporter(method, fmt: str):
    """An export handler for one format."""
    def handler(request: gr.Request, sid):
        return method(request, sid, fmt)
    return handler


@dataclass
class StudioServices:
    """What the page needs, taken from the ChatService and the server's config (see studio.server)."""
    chat: object
    store: object
    model_name: str = ""
    random_weights: bool = False
    model_note: str = ""
    state_reuse: bool = True
    max_upload_bytes: int = 100 * 1024 * 1024
    root_path: str = ""
    concurrency: int = 4

    @classmethod
    def from_server(cls, chat, config) -> "StudioServices":
        """From studio.server's ChatService and ServerConfig."""
        engine = getattr(chat.engine, "engine", None)
        return cls(chat, chat.store, config.model_name, config.model["random_weights"], config.model["note"],
                   getattr(getattr(engine, "args", None), "enable_state_reuse", True),
                   config.max_upload_mb * 1024 * 1024, config.root_path or "",
                   getattr(getattr(engine, "args", None), "max_num_seqs", 4))


def mount_ui(app, chat, config):
    """studio.server's hook: add the share page route, then mount the studio at / of the FastAPI app, with a
    login page when config.auth lists users (each then sees only their own sessions)."""
    services = StudioServices.from_server(chat, config)
    add_share_route(app, services.store)
    logins = add_export_route(app, services.store, auth=bool(config.auth))
    app = gr.mount_gradio_app(app, build_ui(services), path="/", auth=list(config.auth) or None,
                               root_path=config.root_path or None, max_file_size=f"{config.max_upload_mb}mb",
                               theme=theme(), css_paths=[ASSETS / "style.css"],
                               head=f"<script>{(ASSETS / 'studio.js').read_text(encoding='utf-8')}</script>",
                               favicon_path=str(ASSETS / "logo.svg"), footer_links=[],
                               auth_message="M1 Studio: sign in to see your chats.")
    logins.gradio_app = mounted_gradio_app(app)
    if config.auth:  # a page's Gradio session hash serves only the login that first used it (queue_guard)
        app.add_middleware(SessionHashGuard, user_of=gradio_user_lookup(logins.gradio_app))
    return app


def mounted_gradio_app(app):
    """The Gradio App that gr.mount_gradio_app put on the FastAPI app (it holds the login tokens)."""
    from starlette.routing import Mount
    return next(route.app for route in app.routes if isinstance(route, Mount) and hasattr(route.app, "tokens"))
