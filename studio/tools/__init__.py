"""Built-in tools the studio can offer M1 (`app.py --tools calculator,documents`): specs and a runner."""
