"""What the studio says about the served checkpoint: its name and whether its weights are random (engine.tiny)."""
import json
from pathlib import Path

RANDOM_WEIGHTS_KEY = "m1_studio_note"


def model_info(model_dir) -> dict:
    """{"name", "path", "random_weights", "note"}: random_weights is True for checkpoints written by engine.tiny
    (their generation_config.json carries an "m1_studio_note"); note is the text to show users."""
    path = Path(model_dir)
    config = path / "generation_config.json"
    marker = json.loads(config.read_text()).get(RANDOM_WEIGHTS_KEY) if config.is_file() else None
    note = (f"Demo model with RANDOM weights ({marker}): its replies are gibberish. Start with --model pointing at "
            "a MiniMax-M1 checkpoint for real answers.") if marker else ""
    return {"name": path.name, "path": str(path), "random_weights": bool(marker), "note": note}
