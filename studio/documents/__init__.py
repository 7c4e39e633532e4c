"""Reading uploads into text: type detection, per-format readers (PDF, DOCX, XLSX, PPTX, HTML, text), limits, errors.

May import: document-format libraries only (no engine, no Gradio, no store).
"""
