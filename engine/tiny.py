"""`python -m engine.tiny`: write tiny checkpoints in the real M1 layouts (the code lives in engine/model/tiny.py)."""
from .model.tiny import main

if __name__ == "__main__":
    main()
