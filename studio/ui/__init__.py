"""The Gradio page: components and event wiring (`ui`), handlers per concern, and HTML views of messages.

May import: the studio's services (studio.chat, studio.store, studio.documents, ...) and gradio; never the engine directly.
"""
