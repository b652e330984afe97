"""The exported tokenizer: ours and transformers' AutoTokenizer read back the same ids."""

import pytest

from score_jax.compare import export
from score_jax.data import tokenizer as tok_lib

TEMPLATE = (
  "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
)


def test_saved_tokenizer_reads_back_in_ours_and_transformers(tmp_path):
  transformers = pytest.importorskip("transformers")
  lines = [f"Compute {a} + {b}. Reply with the answer only." for a in range(40) for b in range(9)]
  tok = tok_lib.load_tokenizer(tok_lib.train_bpe_tokenizer_json(lines, tmp_path / "bpe", 300))
  export.save_tokenizer(tok, str(tmp_path / "out"), chat_template=TEMPLATE)
  again = tok_lib.load_tokenizer(tmp_path / "out")
  theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "out"))
  text = "Compute 17 + 5. Reply with the answer only. 22"
  assert again.encode(text) == tok.encode(text) == theirs.encode(text, add_special_tokens=False)
  assert (again.bos_id, again.eos_id, again.pad_id) == (tok.bos_id, tok.eos_id, tok.pad_id)
  assert theirs.eos_token_id == tok.eos_id and theirs.pad_token_id == tok.pad_id
  chat = theirs.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
  assert chat == "<|im_start|>user\nhi<|im_end|>\n"


def test_a_sentencepiece_tokenizer_is_refused_by_name(tmp_path):
  class NotHF:
    pass

  with pytest.raises(TypeError, match="NotHF"):
    export.save_tokenizer(NotHF(), str(tmp_path))
