"""M1 Studio: plain-Python services (documents, sessions, chat, API) behind the Gradio UI and the OpenAI API."""
