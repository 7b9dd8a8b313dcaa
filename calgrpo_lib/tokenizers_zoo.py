"""Tiny tokenizers of three families, trained offline in seconds on the synthetic task's text.

Real policies use one of three families of subword tokenizers, and each puts token boundaries and spaces in a
different place, which is what makes "which tokens does this quote cover?" tricky:

- ``"byte_bpe"``: byte-level BPE (GPT-2, Llama 3, Qwen): the text is bytes; a space is glued to the *next* word
  (``Ġworld``), and a character of several UTF-8 bytes may be split across two tokens.
- ``"wordpiece"``: WordPiece (BERT): words are split at spaces and punctuation, which belong to no token; word
  pieces after the first start with ``##``; the decoder re-inserts spaces.
- ``"unigram"``: a SentencePiece-style Unigram model with the ``Metaspace`` pre-tokenizer (T5, Llama 2 style): a
  space becomes ``▁`` at the start of the next piece, and the decoder drops the first one.

All three are trained with the ``tokenizers`` library on text from :func:`calgrpo_lib.tasks.generate_problems` (no
download), get the special tokens ``<pad>``, ``<eos>`` and ``<unk>``, and are returned wrapped as a ``transformers``
fast tokenizer (``pad_token``/``eos_token`` set), the kind of object a policy comes with.
"""

from __future__ import annotations

from .tasks import generate_problems
from .validation import check_choice, check_int, check_type

__all__ = ["TOKENIZER_KINDS", "SPECIAL_TOKENS", "corpus_texts", "train_tokenizer"]

TOKENIZER_KINDS = ("byte_bpe", "wordpiece", "unigram")
SPECIAL_TOKENS = ("<pad>", "<eos>", "<unk>")


def corpus_texts(n_problems: int = 500, seed: int = 0) -> list[str]:
    """Questions and reference solutions of ``n_problems`` synthetic train problems: a small training corpus."""
    check_int("n_problems", n_problems, 1, None)
    problems = generate_problems(n_problems, seed=seed, split="train")
    return [t for p in problems for t in (p.question, p.answer)]


def _byte_bpe(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    return tok, trainer


def _wordpiece(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="<unk>"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                        show_progress=False)
    return tok, trainer


def _unigram(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), unk_token="<unk>",
                                      show_progress=False)
    return tok, trainer


_BUILDERS = {"byte_bpe": _byte_bpe, "wordpiece": _wordpiece, "unigram": _unigram}


def train_tokenizer(kind: str, texts: list[str] | None = None, vocab_size: int = 400):
    """Train a tokenizer of family ``kind`` (one of :data:`TOKENIZER_KINDS`) on ``texts`` (default: the corpus).

    Returns a ``transformers`` fast tokenizer with ``pad_token="<pad>"``, ``eos_token="<eos>"``,
    ``unk_token="<unk>"``; its ``backend_tokenizer`` is the raw ``tokenizers.Tokenizer``. Deterministic for the
    same inputs. ``vocab_size`` is an upper bound (the corpus is small, so the trainer may stop earlier).
    """
    from transformers import PreTrainedTokenizerFast

    check_choice("kind", kind, TOKENIZER_KINDS)
    check_int("vocab_size", vocab_size, 300 if kind == "byte_bpe" else 50, 100_000)
    texts = corpus_texts() if texts is None else texts
    check_type("texts", texts, list)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"texts must be a non-empty list of str, got {len(texts)} items")
    tok, trainer = _BUILDERS[kind](vocab_size)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>",
                                   clean_up_tokenization_spaces=False)
