"""Tokenizer tests on real vocabularies trained here: SentencePiece (Gemma layout) and BPE."""

import json
import pathlib
import random

import pytest
import tokenizers
import transformers

from score_jax.data import tokenizer as tok_lib

_WORDS = "the a of to and is in that it for on with as was at by be this are from or not we".split()
ROUND_TRIP = [
  "What is 12 + 7? The answer is 19.",
  "  two leading spaces, trailing tab\t and\nnewlines\n\n",
  "Unicode: é ß 你好 🙂 ∫x dx",  # Mostly unseen in training: exercises byte fallback.
  "",
]


def corpus(n: int = 300, seed: int = 0) -> list[str]:
  """Few hundred lines of English-like and arithmetic text, some chat-formatted."""
  rng = random.Random(seed)
  lines = []
  for i in range(n):
    words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12)))
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    lines.append(f"{words} {a} + {b} = {a + b}.")
    if i % 5 == 0:
      lines.append(f"<start_of_turn>user\nWhat is {a}+{b}?<end_of_turn>\n<start_of_turn>model\n")
  return lines


@pytest.fixture(scope="module")
def sp_path(tmp_path_factory):
  prefix = str(tmp_path_factory.mktemp("sp") / "tokenizer")
  return tok_lib.train_sentencepiece(corpus(), prefix, vocab_size=320)


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory):
  lines = [line.replace("start_of_turn", "|im_start|") for line in corpus()]
  out = tmp_path_factory.mktemp("bpe")
  return pathlib.Path(tok_lib.train_bpe_tokenizer_json(lines, out, vocab_size=300))


def test_sentencepiece_special_ids(sp_path):
  tok = tok_lib.load_tokenizer(sp_path)
  tok.require(tok_lib.GEMMA_CHAT_TOKENS, purpose="the gemma chat template")
  assert isinstance(tok, tok_lib.SentencePieceTokenizer)
  assert tok.vocab_size == 320
  assert (tok.pad_id, tok.eos_id, tok.bos_id) == (0, 1, 2)
  assert tok.id_of("<unk>") == 3
  assert (tok.id_of("<start_of_turn>"), tok.id_of("<end_of_turn>")) == (4, 5)
  assert tok.stop_ids == (1, 5)
  assert tok.id_of("<0x0A>") == 6 + 0x0A  # Byte pieces follow the user symbols.


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_sentencepiece_round_trip(sp_path, text):
  tok = tok_lib.load_tokenizer(sp_path)
  ids = tok.encode(text)
  assert tok.decode(ids) == text
  assert tok.encode(text, add_bos=True) == [tok.bos_id, *ids]


def test_sentencepiece_byte_fallback_and_markers(sp_path):
  tok = tok_lib.load_tokenizer(sp_path)
  ids = tok.encode("你")
  assert [tok.id_to_piece(i) for i in ids] == ["<0xE4>", "<0xBD>", "<0xA0>"]
  ids = tok.encode("<start_of_turn>user\nhi<end_of_turn>")
  assert ids[0] == 4 and ids[-1] == 5 and 4 not in ids[1:-1]


def test_sentencepiece_decode_writes_control_tokens(sp_path):
  tok = tok_lib.load_tokenizer(sp_path)
  body = tok.encode(" the answer is 4")
  ids = [tok.bos_id, *body, tok.eos_id, *body, tok.pad_id]
  assert tok.decode(ids) == "<bos> the answer is 4<eos> the answer is 4<pad>"
  assert tok.decode(ids, skip_special=True) == " the answer is 4 the answer is 4"


def test_sentencepiece_decode_with_dummy_prefix(tmp_path):
  # Llama-2 style models prepend a space when encoding and drop it again only at the start.
  path = tok_lib.train_sentencepiece(corpus(60), str(tmp_path / "d"), 300, add_dummy_prefix=True)
  tok = tok_lib.load_tokenizer(path)
  ids = tok.encode("the x")
  assert tok.id_to_piece(ids[0]).startswith("\u2581")
  assert tok.decode([tok.bos_id, *ids, tok.eos_id, *ids]) == "<bos>the x<eos> the x"
  assert tok.decode([tok.bos_id, *ids, tok.eos_id, *ids], skip_special=True) == "the x the x"


def test_sentencepiece_errors(sp_path):
  tok = tok_lib.load_tokenizer(sp_path)
  with pytest.raises(tok_lib.TokenizerError, match=r"no token '<\|im_end\|>'.*") as e:
    tok.id_of("<|im_end|>")
  assert sp_path in str(e.value)
  with pytest.raises(tok_lib.TokenizerError, match="token id 320 at position 1 is outside"):
    tok.decode([5, 320])
  with pytest.raises(tok_lib.TokenizerError, match="not a readable SentencePiece model"):
    tok_lib.SentencePieceTokenizer(sp_path.replace(".model", ".vocab"))


def test_sentencepiece_missing_end_of_turn(tmp_path):
  path = tok_lib.train_sentencepiece(
    corpus(60), str(tmp_path / "noeot"), vocab_size=300, user_defined_symbols=("<start_of_turn>",)
  )
  tok = tok_lib.load_tokenizer(path)
  assert tok.stop_ids == (tok.eos_id,)
  with pytest.raises(
    tok_lib.TokenizerError, match=r"gemma chat template needs token '<end_of_turn>'"
  ) as e:
    tok.require(tok_lib.GEMMA_CHAT_TOKENS, purpose="the gemma chat template")
  assert path in str(e.value)


def test_train_sentencepiece_validates(tmp_path):
  with pytest.raises(tok_lib.TokenizerError, match="vocab_size=200 leaves no learned pieces"):
    tok_lib.train_sentencepiece(corpus(10), str(tmp_path / "m"), vocab_size=200)
  too_many_chars = ["".join(chr(0x4E00 + i) for i in range(100))]
  with pytest.raises(tok_lib.TokenizerError, match=r"train_sentencepiece\('.*m'\):.*vocab_size"):
    tok_lib.train_sentencepiece(too_many_chars, str(tmp_path / "m"), vocab_size=300)
  with pytest.raises(tok_lib.TokenizerError, match="no non-empty training text"):
    tok_lib.train_sentencepiece(["", ""], str(tmp_path / "m"), vocab_size=300)


def test_hf_special_tokens(bpe_dir):
  tok = tok_lib.load_tokenizer(bpe_dir)
  tok.require(tok_lib.CHATML_TOKENS, purpose="the chatml chat template")
  assert isinstance(tok, tok_lib.HFTokenizer)
  assert tok.vocab_size == 300
  # SmolLM2-Instruct's layout, read from tokenizer_config.json.
  assert (tok.id_of("<|endoftext|>"), tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 2, 2)
  assert tok.stop_ids == (2,)
  assert tok.encode("<|im_start|>user\n")[0] == 1


@pytest.mark.parametrize("text", [*ROUND_TRIP, "<|im_start|>user\nhi 你<|im_end|>\n"])
def test_hf_round_trip_matches_transformers(bpe_dir, text):
  tok = tok_lib.load_tokenizer(bpe_dir)
  ref = transformers.PreTrainedTokenizerFast(tokenizer_file=str(bpe_dir / "tokenizer.json"))
  ids = tok.encode(text)
  assert ids == ref.encode(text, add_special_tokens=False)
  assert tok.decode(ids) == text == ref.decode(ids)
  assert tok.encode(text, add_bos=True) == [1, *ids]


def test_hf_in_memory_and_overrides(bpe_dir):
  inner = tokenizers.Tokenizer.from_file(str(bpe_dir / "tokenizer.json"))
  tok = tok_lib.HFTokenizer(inner, eos_token=0, extra_stop_tokens=("<|im_end|>",))
  assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.stop_ids) == (None, 0, 0, (0, 2))
  assert tok.source == "<in-memory tokenizers.Tokenizer>"
  with pytest.raises(tok_lib.TokenizerError, match="add_bos=True but the tokenizer defines no BOS"):
    tok.encode("x", add_bos=True)
  with pytest.raises(tok_lib.TokenizerError, match="no EOS token given"):
    tok_lib.HFTokenizer(inner)
  with pytest.raises(tok_lib.TokenizerError, match=r"bos_token '<s>' is not in the vocabulary"):
    tok_lib.HFTokenizer(inner, bos_token="<s>", eos_token=2)
  with pytest.raises(tok_lib.TokenizerError, match="eos_token id 999 is outside"):
    tok_lib.HFTokenizer(inner, eos_token=999)


def test_hf_config_files(bpe_dir, tmp_path):
  with pytest.raises(
    tok_lib.TokenizerError, match=r"sets eos_token='<\|im_end\|>' but '<\|endoftext"
  ):
    tok_lib.load_tokenizer(bpe_dir, eos_token="<|endoftext|>")
  # generation_config.json eos ids join the stop ids (Llama 3 lists several there).
  (tmp_path / "tokenizer.json").write_text((bpe_dir / "tokenizer.json").read_text())
  (tmp_path / "tokenizer_config.json").write_text(
    json.dumps({"eos_token": {"content": "<|im_end|>"}})
  )
  (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0]}))
  tok = tok_lib.load_tokenizer(tmp_path / "tokenizer.json")
  assert (tok.bos_id, tok.eos_id, tok.stop_ids) == (None, 2, (2, 0))
  (tmp_path / "generation_config.json").write_text('{"eos_token_id": [2,\n 0')
  with pytest.raises(tok_lib.TokenizerError, match=r"generation_config.json:2: invalid JSON"):
    tok_lib.load_tokenizer(tmp_path)


def test_load_tokenizer_errors(tmp_path):
  with pytest.raises(tok_lib.TokenizerError, match="no such tokenizer file"):
    tok_lib.load_tokenizer(tmp_path / "missing.model")
  with pytest.raises(tok_lib.TokenizerError, match="neither tokenizer.json nor tokenizer.model"):
    tok_lib.load_tokenizer(tmp_path)
  (tmp_path / "vocab.txt").write_text("a\n")
  with pytest.raises(tok_lib.TokenizerError, match="unknown tokenizer format"):
    tok_lib.load_tokenizer(tmp_path / "vocab.txt")
  (tmp_path / "tokenizer.json").write_text("{not json")
  with pytest.raises(tok_lib.TokenizerError, match="not a readable tokenizers JSON file"):
    tok_lib.load_tokenizer(tmp_path)
