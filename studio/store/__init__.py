"""The session store: SQLite (WAL) schema and migrations, message trees, token budgets, search, export/import.

May import: the standard library only (no engine, no Gradio); `store.SessionStore` is the entry point.
"""
