"""The web UI (Gradio, mounted into the FastAPI service)."""
