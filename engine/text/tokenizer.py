"""M1 tokenizer: write a byte-level BPE tokenizer from M1's real merges, load one from a model dir, encode/decode.

Ids of the BPE part match the real M1 vocabulary: byte b has id b, merge i has id 256 + i
(M1's "<think>" -> [60, 37959, 62] holds here too). The special tokens follow the BPE vocab; their real ids
(eos 200020) are not known to us, so ours are simply appended. Loading works on any HF tokenizer directory,
including the real checkpoint's (tokenizer.json + tokenizer_config.json + generation_config.json).
"""
import codecs
import gzip
import json
import re
from functools import lru_cache
from pathlib import Path

from . import chat_format

MERGES_PATH = Path(__file__).resolve().parents[2] / "assets" / "tokenizer" / "minimax_m1_merges.txt.gz"
UNK, BOD, BOS, EOS = "<end_of_document>", chat_format.BEGIN_OF_DOCUMENT, chat_format.BOS, chat_format.EOS
SPECIAL_TOKENS = (UNK, BOD, BOS, EOS)
MODEL_MAX_LENGTH = 40960000
ENCODE_SLICE_CHARS = 1 << 16
_CUT = re.compile(r"(?<=\S)[ \n](?=\S)")


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode character map used by byte-level BPE."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


@lru_cache(maxsize=1)
def _unicode_to_bytes() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


def read_merges(num_merges: int | None = None) -> list[tuple[str, str]]:
    """The first `num_merges` (None = all) merges of M1's tokenizer, in rank order."""
    with gzip.open(MERGES_PATH, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    if num_merges is not None:
        if not 0 <= num_merges <= len(merges):
            raise ValueError(f"num_merges must be in [0, {len(merges)}], got {num_merges}")
        merges = merges[:num_merges]
    return merges


def write_tokenizer_files(out_dir, num_merges: int | None = None) -> int:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json into `out_dir`.

    The BPE uses the first `num_merges` of M1's merges (None = all 199,744). Returns the vocab size
    (BPE vocab + the 4 special tokens), i.e. the model's minimum vocab_size.
    """
    from tokenizers import AddedToken, Tokenizer as RawTokenizer, decoders, models, pre_tokenizers

    merges = read_merges(num_merges)
    byte_chars = bytes_to_unicode()
    vocab = {byte_chars[b]: b for b in range(256)}
    for i, (left, right) in enumerate(merges):
        vocab[left + right] = 256 + i
    raw = RawTokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    raw.decoder = decoders.ByteLevel()
    raw.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    raw.save(str(out / "tokenizer.json"))
    names = {"bos_token": BOS, "eos_token": EOS, "unk_token": UNK}
    config = {"add_prefix_space": False, **names, "clean_up_tokenization_spaces": False,
              "model_max_length": MODEL_MAX_LENGTH, "tokenizer_class": "GPT2Tokenizer",
              "chat_template": chat_format.CHAT_TEMPLATE}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(names, indent=2) + "\n")
    return raw.get_vocab_size(with_added_tokens=True)


def load_tokenizer(model_dir) -> "Tokenizer":
    """Load the tokenizer (and EOS ids from generation_config.json) of a model directory.

    tokenizer.json is used verbatim (pre-tokenizer, added tokens) as vLLM does: transformers' GPT2Tokenizer class
    would rebuild the pipeline from vocab and merges and drop the file's own pre-tokenizer.
    """
    from transformers import PreTrainedTokenizerFast

    model_dir = Path(model_dir)
    if not (model_dir / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{model_dir}: no tokenizer.json (a fast tokenizer file is required)")
    return Tokenizer(PreTrainedTokenizerFast.from_pretrained(str(model_dir)), _generation_eos(model_dir))


def _generation_eos(model_dir: Path) -> set[int] | None:
    path = model_dir / "generation_config.json"
    if not path.is_file():
        return None
    eos = json.loads(path.read_text()).get("eos_token_id")
    if eos is None:
        return None
    ids = [eos] if isinstance(eos, int) else eos
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        raise ValueError(f"{path}: eos_token_id must be an int or a list of ints, got {eos!r}")
    return set(ids)


class Tokenizer:
    """A transformers fast tokenizer plus M1 chat encoding, injection-safe plain encoding and streaming decode."""

    def __init__(self, hf_tokenizer, eos_token_ids: set[int] | None = None):
        self.hf = hf_tokenizer
        self._raw = hf_tokenizer.backend_tokenizer
        self._plain = self._raw.__class__.from_str(self._raw.to_str())
        self._plain.encode_special_tokens = True
        self._added = {i: t.content for i, t in self._raw.get_added_tokens_decoder().items()}
        self._special_ids = {i for i, t in self._raw.get_added_tokens_decoder().items() if t.special}
        if eos_token_ids is None:
            if hf_tokenizer.eos_token_id is None:
                raise ValueError("tokenizer has no eos_token and generation_config.json gives no eos_token_id")
            eos_token_ids = {hf_tokenizer.eos_token_id}
        self.eos_token_ids = set(eos_token_ids)
        self.vocab_size = self._raw.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of plain text; special-token strings inside it stay ordinary text (never special ids)."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects str, got {type(text).__name__}")
        if len(text) <= ENCODE_SLICE_CHARS:
            return self._plain.encode(text, add_special_tokens=False).ids
        encodings = self._plain.encode_batch(_slices(text), add_special_tokens=False)
        return [i for enc in encodings for i in enc.ids]

    def count_tokens(self, text: str) -> int:
        """Number of tokens of plain text (same as len(encode(text)))."""
        if len(text) <= ENCODE_SLICE_CHARS:
            return len(self._plain.encode(text, add_special_tokens=False).ids)
        return sum(len(enc.ids) for enc in self._plain.encode_batch(_slices(text), add_special_tokens=False))

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """Text of token ids (invalid UTF-8 becomes U+FFFD)."""
        return self._raw.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_id(self, token: str) -> int:
        """Id of a single (special) token string; KeyError if the vocab lacks it."""
        token_id = self._raw.token_to_id(token)
        if token_id is None:
            raise KeyError(f"token {token!r} is not in the vocabulary")
        return token_id

    def encode_chat(self, messages, tools=None, add_generation_prompt=True) -> list[int]:
        """Prompt ids of an M1 chat: template markers as special ids, all message text as plain text."""
        ids = []
        for text, is_marker in chat_format.segments(messages, tools, add_generation_prompt):
            ids.extend([self.token_id(text)] if is_marker else self.encode(text))
        return ids

    def stream(self, skip_special_tokens: bool = False) -> "IncrementalDecoder":
        """A fresh streaming detokenizer for this tokenizer."""
        return IncrementalDecoder(self, skip_special_tokens)

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes one token stands for (added tokens: their UTF-8 text)."""
        if token_id in self._added:
            return self._added[token_id].encode("utf-8")
        piece = self._raw.id_to_token(token_id)
        if piece is None:
            raise ValueError(f"token id {token_id} is outside the vocabulary (size {self.vocab_size})")
        table = _unicode_to_bytes()
        return bytes(table[c] for c in piece) if all(c in table for c in piece) else piece.encode("utf-8")

    def is_special(self, token_id: int) -> bool:
        """Whether the id is a special added token (e.g. <end_of_sentence>)."""
        return token_id in self._special_ids


class IncrementalDecoder:
    """Streaming detokenizer: push ids one at a time, get back only complete UTF-8 text.

    A character whose bytes span several tokens is emitted whole once its last byte arrives.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = False):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """Add one token; return the newly completed text (possibly '')."""
        if self.skip_special_tokens and self.tokenizer.is_special(token_id):
            return ""
        return self._utf8.decode(self.tokenizer.token_bytes(token_id))

    def flush(self) -> str:
        """End of stream: return what is pending (an incomplete character becomes U+FFFD)."""
        return self._utf8.decode(b"", final=True)


def _slices(text: str) -> list[str]:
    """Cut long text into ~64k-char slices that tokenize exactly like the whole.

    Cuts fall just before a single space/newline between two non-space characters: no GPT-2 pre-token
    spans such a point, so the BPE of the parts equals the BPE of the whole.
    """
    out, start = [], 0
    while start < len(text):
        end = start + ENCODE_SLICE_CHARS
        end = len(text) if end >= len(text) else _cut_point(text, start, end)
        out.append(text[start:end])
        start = end
    return out


def _cut_point(text: str, start: int, end: int) -> int:
    for low in (max(start + 1, end - 4096), start + 1):
        last = None
        for last in _CUT.finditer(text, low, end):
            pass
        if last is not None:
            return last.start()
    following = _CUT.search(text, end)
    return following.start() if following else len(text)
