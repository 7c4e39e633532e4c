"""Model configuration: reads M1's official `config.json` and the transformers `minimax` one into one dataclass."""
import json
from dataclasses import dataclass, field
from pathlib import Path

ARCHITECTURES = ("MiniMaxM1ForCausalLM", "MiniMaxText01ForCausalLM", "MiniMaxForCausalLM")
LINEAR, FULL = "linear_attention", "full_attention"


class ConfigError(ValueError):
    """A config.json that cannot describe an M1-architecture model; the message names the field."""


@dataclass
class ModelConfig:
    """Everything the engine needs to build M1; built once by `from_dict`/`from_dir` and validated there."""
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    num_experts: int
    top_k: int
    layer_types: list[str]
    rotary_dim: int
    rope_theta: float
    rms_norm_eps: float = 1e-5
    lightning_norm_eps: float = 1e-6   # GH builds the lightning output norm with its class default
    linear_alpha: float = 1.0
    linear_beta: float = 1.0
    full_alpha: float = 1.0
    full_beta: float = 1.0
    mlp_alpha: float = 1.0
    mlp_beta: float = 1.0
    block_size: int = 256
    max_position_embeddings: int = 10_240_000
    tie_word_embeddings: bool = False
    torch_dtype: str = "bfloat16"
    model_type: str = "minimax_m1"
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def lightning_layers(self) -> list[int]:
        return [i for i, t in enumerate(self.layer_types) if t == LINEAR]

    @property
    def softmax_layers(self) -> list[int]:
        return [i for i, t in enumerate(self.layer_types) if t == FULL]

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> "ModelConfig":
        path = Path(model_dir) / "config.json"
        if not path.is_file():
            raise ConfigError(f"no config.json in {model_dir}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        archs = d.get("architectures") or []
        if not any(a in ARCHITECTURES for a in archs):
            raise ConfigError(f"config field 'architectures' is {archs!r}; expected one of {list(ARCHITECTURES)}")
        num_layers = _req(d, "num_hidden_layers", int)
        hidden = _req(d, "hidden_size", int)
        heads = _req(d, "num_attention_heads", int)
        head_dim = int(d.get("head_dim") or hidden // heads)
        cfg = cls(
            hidden_size=hidden,
            intermediate_size=_req(d, "intermediate_size", int),
            num_layers=num_layers,
            num_heads=heads,
            num_kv_heads=int(d.get("num_key_value_heads") or heads),
            head_dim=head_dim,
            vocab_size=_req(d, "vocab_size", int),
            num_experts=_req(d, "num_local_experts", int),
            top_k=_req(d, "num_experts_per_tok", int),
            layer_types=_layer_types(d, num_layers),
            rotary_dim=0, rope_theta=0.0,
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-5)),
            block_size=int(d.get("block_size") or 256),
            max_position_embeddings=int(d.get("max_position_embeddings") or 10_240_000),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            torch_dtype=str(d.get("torch_dtype") or d.get("dtype") or "bfloat16"),
            model_type=str(d.get("model_type", "")),
            raw=d,
        )
        cfg.rotary_dim, cfg.rope_theta = _rope(d, head_dim)
        _residual_factors(cfg, d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(f"num_attention_heads={self.num_heads} is not a multiple of num_key_value_heads={self.num_kv_heads}")
        if self.top_k > self.num_experts:
            raise ConfigError(f"num_experts_per_tok={self.top_k} exceeds num_local_experts={self.num_experts}")
        if self.rotary_dim % 2 or not 0 < self.rotary_dim <= self.head_dim:
            raise ConfigError(f"rotary_dim={self.rotary_dim} must be even and in (0, head_dim={self.head_dim}]")
        if self.raw.get("shared_intermediate_size", 0) not in (0, None):
            raise ConfigError("config field 'shared_intermediate_size' is non-zero: shared experts are not part of M1")


def _req(d: dict, key: str, kind):
    if key not in d or d[key] is None:
        raise ConfigError(f"config field '{key}' is missing")
    try:
        return kind(d[key])
    except (TypeError, ValueError):
        raise ConfigError(f"config field '{key}' has value {d[key]!r}, expected {kind.__name__}") from None


def _layer_types(d: dict, num_layers: int) -> list[str]:
    if "attn_type_list" in d:
        raw, key = d["attn_type_list"], "attn_type_list"
        names = {0: LINEAR, 1: FULL}
        if not all(v in names for v in raw):
            raise ConfigError(f"config field 'attn_type_list' must hold 0 (lightning) or 1 (softmax), got {raw!r}")
        types = [names[v] for v in raw]
    elif "layer_types" in d:
        types, key = list(d["layer_types"]), "layer_types"
        if not all(t in (LINEAR, FULL) for t in types):
            raise ConfigError(f"config field 'layer_types' must hold '{LINEAR}' or '{FULL}', got {types!r}")
    else:
        raise ConfigError("config field 'attn_type_list' (or 'layer_types') is missing")
    if len(types) != num_layers:
        raise ConfigError(f"config field '{key}' has {len(types)} entries but num_hidden_layers={num_layers}")
    return types


def _rope(d: dict, head_dim: int) -> tuple[int, float]:
    params = d.get("rope_parameters") or {}
    theta = float(params.get("rope_theta") or d.get("rope_theta") or 10_000.0)
    if d.get("rotary_dim"):
        return int(d["rotary_dim"]), theta
    factor = params.get("partial_rotary_factor", d.get("partial_rotary_factor"))
    if factor is None:
        raise ConfigError("config field 'rotary_dim' (or rope_parameters.partial_rotary_factor) is missing")
    return int(round(head_dim * float(factor))), theta


def _residual_factors(cfg: ModelConfig, d: dict) -> None:
    if "layernorm_full_attention_alpha" in d or "postnorm" in d:
        if d.get("postnorm", True) is not True:
            raise ConfigError("config field 'postnorm' is false: only M1's post-norm residual is supported")
        get = lambda k: float(d.get(k, 1.0))
        cfg.full_alpha, cfg.full_beta = get("layernorm_full_attention_alpha"), get("layernorm_full_attention_beta")
        cfg.linear_alpha, cfg.linear_beta = get("layernorm_linear_attention_alpha"), get("layernorm_linear_attention_beta")
        cfg.mlp_alpha, cfg.mlp_beta = get("layernorm_mlp_alpha"), get("layernorm_mlp_beta")
    else:
        get = lambda k: float(d.get(k, 1.0))
        cfg.full_alpha, cfg.full_beta = get("full_attn_alpha_factor"), get("full_attn_beta_factor")
        cfg.linear_alpha, cfg.linear_beta = get("linear_attn_alpha_factor"), get("linear_attn_beta_factor")
        cfg.mlp_alpha, cfg.mlp_beta = get("mlp_alpha_factor"), get("mlp_beta_factor")
