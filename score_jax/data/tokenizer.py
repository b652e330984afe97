"""Tokenizers: one small interface over SentencePiece (Gemma) and HF `tokenizers` (Llama, SmolLM).

Owns text <-> id conversion, the special ids (BOS, EOS, pad, the stop ids that end a model turn),
loading by path, and training tiny real vocabularies for tests and the laptop testbed. Rollouts
never decode and re-encode between turns, so `encode` is only ever applied to prompt
text and `decode` only to finished attempts.
"""

from __future__ import annotations

import abc
import json
import os
from collections.abc import Iterable, Sequence

import sentencepiece as spm
import tokenizers

# Tokens that close a model turn in the chat formats we know; each one present in a vocabulary
# joins EOS in `stop_ids`, so a sampler stops at the end of a turn, not only at the end of text.
END_OF_TURN_TOKENS = ("<end_of_turn>", "<|im_end|>", "<|eot_id|>")
GEMMA_CHAT_TOKENS = ("<start_of_turn>", "<end_of_turn>")
CHATML_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


class TokenizerError(ValueError):
  """A tokenizer file, special token or id is missing or wrong."""


class Tokenizer(abc.ABC):
  """Text <-> ids with the special ids the sampler and the chat templates need."""

  vocab_size: int
  bos_id: int | None
  eos_id: int
  pad_id: int
  stop_ids: tuple[int, ...]  # ids that end a model turn: EOS, then end-of-turn tokens
  source: str  # file (or description) it came from, named in every error

  @abc.abstractmethod
  def _encode(self, text: str) -> list[int]: ...

  @abc.abstractmethod
  def _decode(self, ids: list[int], skip_special: bool) -> str: ...

  @abc.abstractmethod
  def _lookup(self, piece: str) -> int | None: ...

  @abc.abstractmethod
  def id_to_piece(self, token_id: int) -> str:
    """The vocabulary entry of `token_id`."""

  def encode(self, text: str, add_bos: bool = False) -> list[int]:
    """Ids of `text`; special tokens written in the text become their single ids."""
    if not isinstance(text, str):
      raise TokenizerError(f"{self.source}: encode expects str, got {type(text).__name__}")
    ids = self._encode(text)
    if add_bos:
      if self.bos_id is None:
        raise TokenizerError(f"{self.source}: add_bos=True but the tokenizer defines no BOS token")
      ids = [self.bos_id, *ids]
    return ids

  def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
    """Text of `ids`; special tokens are written out (e.g. '<eos>') unless `skip_special`."""
    ids = [int(i) for i in ids]
    for pos, i in enumerate(ids):
      if not 0 <= i < self.vocab_size:
        raise TokenizerError(
          f"{self.source}: token id {i} at position {pos} is outside the vocabulary "
          f"(size {self.vocab_size})"
        )
    return self._decode(ids, skip_special)

  def id_of(self, piece: str) -> int:
    """Id of vocabulary entry `piece`; raises naming the piece and the file when absent."""
    token_id = self._lookup(piece)
    if token_id is None:
      raise TokenizerError(f"{self.source}: no token {piece!r} in the vocabulary")
    return token_id

  def has_piece(self, piece: str) -> bool:
    return self._lookup(piece) is not None

  def require(self, pieces: Iterable[str], purpose: str) -> None:
    """Checks each piece exists AND is recognised in text as its single id.

    A chat template writes its markers as text, so a marker the tokenizer would split into
    ordinary pieces (e.g. a SentencePiece control symbol) silently corrupts every prompt.
    """
    for piece in pieces:
      token_id = self._lookup(piece)
      if token_id is None:
        raise TokenizerError(f"{self.source}: {purpose} needs token {piece!r}, which is absent")
      got = self._encode(piece)
      if got != [token_id]:
        raise TokenizerError(
          f"{self.source}: {purpose} needs token {piece!r} (id {token_id}) to be recognised in "
          f"text, but encoding it gives ids {got}"
        )

  def _stop_ids(self, extra_ids: Iterable[int]) -> tuple[int, ...]:
    """EOS, then every end-of-turn token the vocabulary holds, then `extra_ids`, deduplicated."""
    turn_ids = [self._lookup(piece) for piece in END_OF_TURN_TOKENS]
    stops = [self.eos_id, *(i for i in turn_ids if i is not None), *extra_ids]
    return tuple(dict.fromkeys(stops))

  def __repr__(self) -> str:
    return (
      f"{type(self).__name__}({self.source!r}, vocab_size={self.vocab_size}, bos={self.bos_id}, "
      f"eos={self.eos_id}, pad={self.pad_id}, stop={self.stop_ids})"
    )


class SentencePieceTokenizer(Tokenizer):
  """A SentencePiece `.model` (Gemma layout: pad 0, eos 1, bos 2, unk 3)."""

  def __init__(
    self,
    path: str | os.PathLike | None = None,
    *,
    model_proto: bytes | None = None,
    extra_stop_tokens: Sequence[str] = (),
  ):
    if (path is None) == (model_proto is None):
      raise TokenizerError("SentencePieceTokenizer: give exactly one of path and model_proto")
    self.source = os.fspath(path) if path is not None else "<sentencepiece model proto>"
    self._sp = spm.SentencePieceProcessor()
    try:
      if path is not None:
        self._sp.Load(model_file=self.source)
      else:
        self._sp.LoadFromSerializedProto(model_proto)
    except (OSError, RuntimeError) as e:
      raise TokenizerError(f"{self.source}: not a readable SentencePiece model ({e})") from e
    self.vocab_size = self._sp.GetPieceSize()
    self.bos_id = self._sp.bos_id() if self._sp.bos_id() >= 0 else None
    if self._sp.eos_id() < 0:
      raise TokenizerError(f"{self.source}: the SentencePiece model defines no EOS id")
    self.eos_id = self._sp.eos_id()
    # Llama-2 style models define no pad; padded slots are masked out, so EOS is a safe filler.
    self.pad_id = self._sp.pad_id() if self._sp.pad_id() >= 0 else self.eos_id
    self._control = frozenset(i for i in range(self.vocab_size) if self._sp.IsControl(i))
    self.stop_ids = self._stop_ids(self.id_of(piece) for piece in extra_stop_tokens)

  def _encode(self, text: str) -> list[int]:
    return self._sp.Encode(text, out_type=int)

  def _lookup(self, piece: str) -> int | None:
    token_id = self._sp.PieceToId(piece)
    # PieceToId answers unknown pieces with the unk id; only '<unk>' itself may map there.
    if self._sp.IsUnknown(token_id) and piece != self._sp.IdToPiece(token_id):
      return None
    return token_id

  def id_to_piece(self, token_id: int) -> str:
    return self._sp.IdToPiece(int(token_id))

  def _decode(self, ids: list[int], skip_special: bool) -> str:
    if skip_special or not self._control.intersection(ids):
      return self._sp.Decode(ids)
    # SentencePiece drops control ids (<bos>, <eos>, <pad>) when decoding; write them out, and
    # decode the runs between them separately.
    parts, run, first = [], [], True
    for i in [*ids, None]:
      if i is not None and i not in self._control:
        run.append(i)
        continue
      if run:
        text = self._sp.Decode(run)
        # Models with a dummy prefix lose one leading space when decoded; SentencePiece drops it
        # only at the start of the text, so a later run gets its space back.
        if not first and self._sp.IdToPiece(run[0]).startswith("\u2581"):
          text = text if text.startswith(" ") else " " + text
        parts.append(text)
        run, first = [], False
      if i is not None:
        parts.append(self._sp.IdToPiece(i))
    return "".join(parts)


class HFTokenizer(Tokenizer):
  """A HF `tokenizers.Tokenizer` (tokenizer.json, or one built in memory by the GGUF loader).

  Special tokens are given as strings or ids. `from_file` reads them from tokenizer_config.json
  (and extra EOS ids from generation_config.json) next to tokenizer.json when present.
  """

  def __init__(
    self,
    tokenizer: tokenizers.Tokenizer,
    *,
    bos_token: str | int | None = None,
    eos_token: str | int | None = None,
    pad_token: str | int | None = None,
    extra_stop_tokens: Sequence[str | int] = (),
    source: str = "<in-memory tokenizers.Tokenizer>",
  ):
    if not isinstance(tokenizer, tokenizers.Tokenizer):
      raise TokenizerError(f"{source}: expected tokenizers.Tokenizer, got {type(tokenizer)}")
    self._tok = tokenizer
    self.source = source
    self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    if eos_token is None:
      raise TokenizerError(f"{source}: no EOS token given (eos_token) and none configured")
    self.bos_id = None if bos_token is None else self._special("bos_token", bos_token)
    self.eos_id = self._special("eos_token", eos_token)
    self.pad_id = self.eos_id if pad_token is None else self._special("pad_token", pad_token)
    self.stop_ids = self._stop_ids(
      self._special("extra_stop_tokens", extra) for extra in extra_stop_tokens
    )

  @classmethod
  def from_file(cls, path: str | os.PathLike, **kwargs) -> HFTokenizer:
    """Loads tokenizer.json (a file or its directory) and its sibling config files."""
    path = os.fspath(path)
    file = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
    try:
      tok = tokenizers.Tokenizer.from_file(file)
    except Exception as e:  # tokenizers raises a bare Exception on bad JSON.
      raise TokenizerError(f"{file}: not a readable tokenizers JSON file ({e})") from e
    directory = os.path.dirname(file)
    config = _read_json(os.path.join(directory, "tokenizer_config.json"))
    for field in ("bos_token", "eos_token", "pad_token"):
      value = config.get(field)
      if isinstance(value, dict):  # Older configs store AddedToken dicts.
        value = value.get("content")
      if value is None:
        continue
      if kwargs.get(field) is not None and kwargs[field] != value:
        raise TokenizerError(
          f"{directory}/tokenizer_config.json sets {field}={value!r} but {kwargs[field]!r} was "
          "passed; drop the argument or fix the file"
        )
      kwargs[field] = value
    gen_eos = _read_json(os.path.join(directory, "generation_config.json")).get("eos_token_id")
    if gen_eos is not None:
      gen_eos = gen_eos if isinstance(gen_eos, list) else [gen_eos]
      kwargs["extra_stop_tokens"] = (*kwargs.get("extra_stop_tokens", ()), *gen_eos)
    return cls(tok, source=file, **kwargs)

  def save_json(self, path: str | os.PathLike) -> None:
    """Writes the tokenizers-library JSON (a tokenizer.json) that `from_file` reads back."""
    self._tok.save(os.fspath(path))

  def _special(self, field: str, token: str | int) -> int:
    if isinstance(token, int):
      if not 0 <= token < self.vocab_size:
        raise TokenizerError(
          f"{self.source}: {field} id {token} is outside the vocabulary (size {self.vocab_size})"
        )
      return token
    token_id = self._tok.token_to_id(token)
    if token_id is None:
      raise TokenizerError(f"{self.source}: {field} {token!r} is not in the vocabulary")
    return token_id

  def _encode(self, text: str) -> list[int]:
    return self._tok.encode(text, add_special_tokens=False).ids

  def _lookup(self, piece: str) -> int | None:
    return self._tok.token_to_id(piece)

  def id_to_piece(self, token_id: int) -> str:
    return self._tok.id_to_token(int(token_id))

  def _decode(self, ids: list[int], skip_special: bool) -> str:
    return self._tok.decode(ids, skip_special_tokens=skip_special)


def _read_json(file: str) -> dict:
  if not os.path.exists(file):
    return {}
  try:
    with open(file, encoding="utf-8") as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise TokenizerError(f"{file}:{e.lineno}: invalid JSON ({e.msg})") from e


def load_tokenizer(path: str | os.PathLike, **kwargs) -> Tokenizer:
  """Loads a `.model` (SentencePiece) or `tokenizer.json` (HF), or a directory holding one.

  Knows nothing of chat formats: a caller that needs a template's markers checks them with
  `ChatTemplate.check_tokenizer`, so a wrong vocabulary fails naming token and file.

  Args:
    path: a file, or a directory with tokenizer.model or tokenizer.json (HF preferred).
    **kwargs: passed to the tokenizer class (special tokens, extra stop tokens).
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    for name in ("tokenizer.json", "tokenizer.model"):
      if os.path.exists(os.path.join(path, name)):
        return load_tokenizer(os.path.join(path, name), **kwargs)
    raise TokenizerError(f"{path}: directory has neither tokenizer.json nor tokenizer.model")
  if not os.path.exists(path):
    raise TokenizerError(f"{path}: no such tokenizer file")
  if path.endswith(".model"):
    return SentencePieceTokenizer(path, **kwargs)
  if path.endswith(".json"):
    return HFTokenizer.from_file(path, **kwargs)
  raise TokenizerError(
    f"{path}: unknown tokenizer format; expected a SentencePiece .model or a tokenizer.json "
    "(GGUF vocabularies load through the GGUF loader)"
  )


def train_sentencepiece(
  texts: Iterable[str],
  model_prefix: str,
  vocab_size: int,
  user_defined_symbols: Sequence[str] = GEMMA_CHAT_TOKENS,
  *,
  model_type: str = "bpe",
  **trainer_options,
) -> str:
  """Trains a real SentencePiece model shaped like Gemma's and returns its `.model` path.

  Ids: pad 0, eos 1, bos 2, unk 3 (Gemma's layout), then `user_defined_symbols` from 4, then
  the 256 byte-fallback pieces, then learned pieces. Byte fallback and the identity
  normalizer make every string round-trip exactly (no NFKC, no whitespace folding, no dummy
  prefix), as in Gemma; digits are split one per token, also as in Gemma.
  """
  texts = [t for t in texts if t]
  if not texts:
    raise TokenizerError(f"train_sentencepiece({model_prefix!r}): no non-empty training text")
  reserved = 4 + len(user_defined_symbols) + 256
  if vocab_size <= reserved:
    raise TokenizerError(
      f"train_sentencepiece: vocab_size={vocab_size} leaves no learned pieces; it must exceed "
      f"{reserved} (4 specials + {len(user_defined_symbols)} user symbols + 256 bytes)"
    )
  options = dict(
    model_type=model_type,
    vocab_size=vocab_size,
    pad_id=0,
    eos_id=1,
    bos_id=2,
    unk_id=3,
    pad_piece="<pad>",
    eos_piece="<eos>",
    bos_piece="<bos>",
    unk_piece="<unk>",
    user_defined_symbols=list(user_defined_symbols),
    byte_fallback=True,
    split_digits=True,
    normalization_rule_name="identity",
    add_dummy_prefix=False,
    remove_extra_whitespaces=False,
    allow_whitespace_only_pieces=True,
    character_coverage=1.0,
    # A tiny corpus cannot fill a fixed-size vocabulary; stop early instead of failing.
    hard_vocab_limit=False,
    num_threads=1,
    minloglevel=2,
  )
  options.update(trainer_options)
  try:
    spm.SentencePieceTrainer.Train(
      sentence_iterator=iter(texts), model_prefix=model_prefix, **options
    )
  except RuntimeError as e:  # e.g. more distinct characters than vocab_size leaves room for.
    raise TokenizerError(f"train_sentencepiece({model_prefix!r}): {e}") from e
  return model_prefix + ".model"


def train_bpe_tokenizer_json(
  texts: Iterable[str],
  out_dir: str | os.PathLike,
  vocab_size: int,
  special_tokens: Sequence[str] = CHATML_TOKENS,
  *,
  bos_token: str | None = "<|im_start|>",
  eos_token: str = "<|im_end|>",
  pad_token: str | None = "<|im_end|>",
) -> str:
  """Trains a byte-level BPE (GPT-2 / SmolLM2 style) and writes tokenizer.json + config.

  The defaults give SmolLM2-Instruct's special tokens and ids: <|endoftext|> 0, <|im_start|> 1,
  <|im_end|> 2. Returns `out_dir`, loadable with `load_tokenizer` or transformers.
  """
  out_dir = os.fspath(out_dir)
  tok = tokenizers.Tokenizer(tokenizers.models.BPE())
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tokenizers.decoders.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(
    vocab_size=vocab_size,
    special_tokens=list(special_tokens),
    initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
  )
  tok.train_from_iterator(texts, trainer)
  os.makedirs(out_dir, exist_ok=True)
  tok.save(os.path.join(out_dir, "tokenizer.json"))
  config = {"bos_token": bos_token, "eos_token": eos_token, "pad_token": pad_token}
  with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
    json.dump({k: v for k, v in config.items() if v is not None}, f, indent=2)
  return out_dir
