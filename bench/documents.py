"""Time to read + token-count a ~1M-token plain-text upload on CPU, with M1's real BPE merges.

    .venv/bin/python bench/documents.py [--tokens 1000000] [--merges PATH] [--pdf-pages 200]

The document is real English/Markdown prose (package READMEs and licences found in this Python environment),
repeated until it holds about --tokens tokens. The tokenizer is built here from the merges file alone
(byte-level BPE: 256 byte symbols + one token per merge, GPT-2 pre-tokenizer regex), without special tokens.
--pdf-pages N also times reading an N-page text PDF generated with reportlab (page-by-page progress).
"""
import argparse
import os
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from studio.documents.documents import estimate_tokens, read_document, split_for_counting  # noqa: E402

DEFAULT_MERGES = "/work/shared/data/minimax_m1_merges.txt"


def byte_symbols() -> list[str]:
    """GPT-2's byte → printable-unicode mapping, in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def build_tokenizer(merges_path: str) -> Tokenizer:
    """Byte-level BPE whose vocab is the 256 byte symbols then each merge's concatenation, in merge order."""
    lines = Path(merges_path).read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    vocab = {symbol: i for i, symbol in enumerate(byte_symbols())}
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def corpus(num_chars: int) -> str:
    """At least num_chars of real prose from this environment's package docs, repeated as needed."""
    root = Path(sysconfig.get_paths()["purelib"])
    names = ("*.md", "*.rst", "METADATA", "LICENSE*")
    files = sorted({p for pattern in names for p in root.rglob(pattern) if p.is_file() and p.stat().st_size < 2e6})
    texts = [p.read_bytes().decode("utf-8", errors="ignore").replace("\x00", "") for p in files]
    base = "\n\n".join(t.strip() for t in texts if t.strip())
    return (base + "\n\n") * (num_chars // (len(base) + 2)) + base[:num_chars % (len(base) + 2)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--merges", default=DEFAULT_MERGES)
    parser.add_argument("--pdf-pages", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    tokenizer = build_tokenizer(args.merges)
    print(f"tokenizer: vocab {tokenizer.get_vocab_size():,} built in {time.perf_counter() - start:.2f} s")
    count = lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)  # noqa: E731
    text = corpus(4 * args.tokens)
    for _ in range(2):  # size the text to about args.tokens tokens (the corpus mixes dense and sparse parts)
        text = corpus(int(len(text) * args.tokens / count(text)))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "long.txt")
        Path(path).write_text(text, encoding="utf-8")
        start = time.perf_counter()
        plain = read_document(path, max_bytes=1 << 30)
        read_s = time.perf_counter() - start
        start = time.perf_counter()
        doc = read_document(path, max_bytes=1 << 30, count_tokens=count, progress=lambda *event: None)
        total_s = time.perf_counter() - start
    batch = lambda t: sum(len(e.ids) for e in tokenizer.encode_batch(split_for_counting(t, 65536)))  # noqa: E731
    start = time.perf_counter()
    batched = read_document(text.encode(), original_name="long.txt", max_bytes=1 << 30,
                            count_tokens=batch)
    batch_s = time.perf_counter() - start
    start = time.perf_counter()
    whole = count(doc.text)
    whole_s = time.perf_counter() - start
    print(f"document: {doc.num_bytes:,} bytes, {doc.num_chars:,} chars, {doc.num_tokens:,} tokens "
          f"({doc.num_chars / doc.num_tokens:.2f} chars/token)")
    print(f"read only (decode + estimate): {read_s:.2f} s; estimate {plain.num_tokens:,} tokens "
          f"({(estimate_tokens(doc.text) - doc.num_tokens) / doc.num_tokens:+.1%} vs exact)")
    print(f"read + exact count in 1M-char slices (sequential, progress per slice): {total_s:.2f} s "
          f"= {doc.num_tokens / total_s:,.0f} tokens/s")
    print(f"read + exact count with encode_batch over 64k-char slices ({os.cpu_count()} CPUs): {batch_s:.2f} s "
          f"(same count: {batched.num_tokens == doc.num_tokens})")
    print(f"one encode() of the whole text: {whole_s:.2f} s; slice sum equals whole count: {whole == doc.num_tokens}")
    if args.pdf_pages:
        time_pdf(text, args.pdf_pages, count)


def time_pdf(text: str, pages: int, count) -> None:
    """Write `pages` pages of `text` (60 lines of 90 chars each) to a PDF and time read + count."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen.canvas import Canvas
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "long.pdf")
        canvas, lines = Canvas(path, pagesize=A4), iter(text.encode("ascii", "ignore").decode().splitlines())
        for _ in range(pages):
            for row in range(60):
                canvas.drawString(30, 800 - 13 * row, next(lines, "")[:90])
            canvas.showPage()
        canvas.save()
        start = time.perf_counter()
        doc = read_document(path, max_bytes=1 << 30, count_tokens=count)
        seconds = time.perf_counter() - start
    print(f"pdf: {pages} pages, {doc.num_chars:,} chars, {doc.num_tokens:,} tokens read + counted in {seconds:.2f} s "
          f"({pages / seconds:.0f} pages/s)")


if __name__ == "__main__":
    main()
