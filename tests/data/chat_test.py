"""Chat templates: HF Jinja parity, the first_turn/next_turn split invariant, token-level splits."""

import pytest
import transformers

from score_jax.data import chat
from score_jax.data import tokenizer as tok_lib

# The models' own `chat_template` strings from their tokenizer_config.json. Gemma's is Gemma 3's
# (google/gemma-3-*-it) without its list-content branch (images/audio; unreachable for
# text messages); SmolLM2's and Llama 3's are verbatim.
GEMMA_JINJA = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""
SMOLLM2_JINJA = (
  "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
  "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
  "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
  "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
  "{% endif %}"
)
LLAMA3_JINJA = (
  "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
  "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim "
  "+ '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
  "{{ content }}{% endfor %}{% if add_generation_prompt %}"
  "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# name -> (Jinja template, BOS text it writes, special tokens of a vocabulary for it)
FORMATS = {
  "gemma": (GEMMA_JINJA, "<bos>", ("<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>")),
  "chatml": (SMOLLM2_JINJA, "", tok_lib.CHATML_TOKENS),
  "llama3": (
    LLAMA3_JINJA,
    "<|begin_of_text|>",
    ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
  ),
}
X, ATTEMPT, P = "What is 17 * 3?", "17 * 3 = 41.\nThe answer is 41.", "Check your work and fix it."
CONVERSATIONS = [
  [{"role": "user", "content": X}],
  [{"role": "user", "content": X}, {"role": "assistant", "content": ATTEMPT}],
  [
    {"role": "user", "content": X},
    {"role": "assistant", "content": ATTEMPT},
    {"role": "user", "content": P},
  ],
  [
    {"role": "system", "content": "Think step by step."},
    {"role": "user", "content": "  spaced question\n"},
    {"role": "assistant", "content": "\n 42 "},
    {"role": "user", "content": P},
  ],
]


def _corpus() -> list[str]:
  text = [f"{X} {ATTEMPT} {P} the user and model turn {i} + {i * 3} = {i * 4}" for i in range(150)]
  return text + [chat.get_template(name).render(c) for name in FORMATS for c in CONVERSATIONS]


@pytest.fixture(scope="module")
def tokenizers_by_format(tmp_path_factory):
  """A real vocabulary per format: SentencePiece for Gemma, byte-level BPE for the others."""
  out = {}
  sp_path = tok_lib.train_sentencepiece(
    _corpus(), str(tmp_path_factory.mktemp("sp") / "gemma"), vocab_size=320
  )
  out["gemma"] = tok_lib.load_tokenizer(sp_path)
  out["chatml"] = tok_lib.load_tokenizer(
    tok_lib.train_bpe_tokenizer_json(_corpus(), tmp_path_factory.mktemp("chatml"), 300)
  )
  llama_dir = tok_lib.train_bpe_tokenizer_json(
    _corpus(),
    tmp_path_factory.mktemp("llama3"),
    300,
    FORMATS["llama3"][2],
    bos_token="<|begin_of_text|>",
    eos_token="<|eot_id|>",
    pad_token=None,
  )
  out["llama3"] = tok_lib.load_tokenizer(llama_dir)
  for name in FORMATS:  # each vocabulary holds its format's markers as single ids
    chat.get_template(name).check_tokenizer(out[name])
  out["hf_dirs"] = {"chatml": out["chatml"].source, "llama3": out["llama3"].source}
  return out


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_render_matches_hf_apply_chat_template(tokenizers_by_format, tmp_path, name):
  jinja, bos_text, specials = FORMATS[name]
  # apply_chat_template needs a tokenizer object; any real one carrying the BOS token will do.
  vocab = tok_lib.train_bpe_tokenizer_json(_corpus()[:20], tmp_path, 300, specials)
  ref = transformers.PreTrainedTokenizerFast(
    tokenizer_file=f"{vocab}/tokenizer.json", bos_token=bos_text or None
  )
  template = chat.get_template(name)
  for conversation in CONVERSATIONS:
    for gen in (True, False):
      want = ref.apply_chat_template(
        conversation, chat_template=jinja, tokenize=False, add_generation_prompt=gen
      )
      got = template.render(conversation, add_generation_prompt=gen)
      assert want == bos_text + got, (conversation, gen)
      assert template.add_bos == bool(bos_text)


@pytest.mark.parametrize("name", sorted(FORMATS))
@pytest.mark.parametrize("system", [None, "Be brief."])
def test_first_turn_next_turn_split(name, system):
  template = chat.get_template(name)
  attempt = ATTEMPT.strip()  # Gemma and Llama 3 trim rendered contents; sampled text is as-is.
  eot = template.end_of_turn
  want = template.render(
    ([{"role": "system", "content": system}] if system is not None else [])
    + [
      {"role": "user", "content": X},
      {"role": "assistant", "content": attempt},
      {"role": "user", "content": P},
    ]
  )
  assert template.first_turn(X, system=system) + attempt + eot + template.next_turn(P) == want
  model_header = template.header.replace("{role}", template.model_role)
  assert template.first_turn(X, system=system).endswith(model_header)
  assert eot in template.stop_tokens


def test_next_turn_literals():
  assert chat.get_template("gemma").next_turn(P) == (
    f"\n<start_of_turn>user\n{P}<end_of_turn>\n<start_of_turn>model\n"
  )
  assert chat.get_template("chatml").next_turn(P) == (
    f"\n<|im_start|>user\n{P}<|im_end|>\n<|im_start|>assistant\n"
  )
  assert chat.get_template("llama3").next_turn(P) == (
    f"<|start_header_id|>user<|end_header_id|>\n\n{P}<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
  )


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_token_level_split_equals_full_encoding(tokenizers_by_format, name):
  """The rollout's id concatenation equals tokenizing the whole rendered conversation."""
  tok, template = tokenizers_by_format[name], chat.get_template(name)
  attempt_ids = tok.encode(ATTEMPT) + [tok.id_of(template.end_of_turn)]
  episode = template.first_turn_ids(tok, X) + attempt_ids + template.next_turn_ids(tok, P)
  full = template.render(
    [
      {"role": "user", "content": X},
      {"role": "assistant", "content": ATTEMPT},
      {"role": "user", "content": P},
    ]
  )
  assert episode == tok.encode(full, add_bos=template.add_bos)
  assert tok.decode(episode, skip_special=True).count(P) == 1
  assert template.stop_ids(tok) == tok.stop_ids


def test_default_system_is_an_option():
  plain = chat.get_template("chatml", default_system=None)
  assert plain.first_turn(X) == f"<|im_start|>user\n{X}<|im_end|>\n<|im_start|>assistant\n"
  custom = chat.get_template("chatml", default_system="Be terse.")
  assert custom.first_turn(X).startswith("<|im_start|>system\nBe terse.<|im_end|>\n")
  assert custom.first_turn(X, system="Other.").startswith("<|im_start|>system\nOther.<|im_end|>")
  assert chat.get_template("gemma").first_turn(X, system="S") == (
    f"<start_of_turn>user\nS\n\n{X}<end_of_turn>\n<start_of_turn>model\n"
  )


def test_render_errors():
  gemma = chat.get_template("gemma")
  with pytest.raises(ValueError, match=r"unknown chat template 'vicuna'; known: chatml, gemma"):
    chat.get_template("vicuna")
  with pytest.raises(ValueError, match="bad override"):
    chat.get_template("gemma", colour="red")
  with pytest.raises(ValueError, match=r"message 3 has role 'assistant' where 'user' is needed"):
    gemma.render(
      [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "assistant", "content": "c"},
      ]
    )
  with pytest.raises(ValueError, match="system message 1 must come first"):
    gemma.render([{"role": "user", "content": "a"}, {"role": "system", "content": "s"}])
  with pytest.raises(ValueError, match="message 0 must be a dict with 'role' and 'content'"):
    gemma.render([{"role": "user"}])
  with pytest.raises(ValueError, match="message 0 content must be str, got list"):
    gemma.render([{"role": "user", "content": ["a"]}])
  with pytest.raises(ValueError, match="message 0 has unknown role 'tool'"):
    gemma.render([{"role": "tool", "content": "a"}])


def test_check_tokenizer_names_token_and_file(tokenizers_by_format, tmp_path):
  chatml_tok = tokenizers_by_format["chatml"]
  with pytest.raises(ValueError, match=r"gemma chat template needs token '<start_of_turn>'") as e:
    chat.get_template("gemma").check_tokenizer(chatml_tok)
  assert chatml_tok.source in str(e.value)
  # A marker stored as a SentencePiece control symbol is never produced from text.
  path = tok_lib.train_sentencepiece(
    _corpus()[:50],
    str(tmp_path / "ctrl"),
    vocab_size=320,
    user_defined_symbols=("<start_of_turn>",),
    control_symbols=["<end_of_turn>"],
  )
  with pytest.raises(ValueError, match=r"'<end_of_turn>' \(id \d+\) to be recognised in text"):
    chat.get_template("gemma").check_tokenizer(tok_lib.load_tokenizer(path))
