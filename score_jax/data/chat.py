"""Chat formats (Gemma, ChatML/SmolLM2, Llama 3) as text, split at the turn boundaries SCoRe needs.

A SCoRe episode is built from token ids without re-tokenization:
  ids(first_turn(x)) + attempt 1 ids (stop token included) + ids(next_turn(p)) + attempt 2 ids.
`first_turn` and `next_turn` are therefore defined so that, for any conversation,

  first_turn(x) + attempt + end_of_turn + next_turn(p) == render([user x, model attempt, user p])

with the generation prompt, and `render` reproduces the models' own HF Jinja chat templates
(checked against transformers' `apply_chat_template` in tests/data/chat_test.py). BOS is never
written as text: templates with `add_bos` expect the caller to prepend the BOS id.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for annotations only: rendering text needs no tokenizer library loaded
  from score_jax.data.tokenizer import Tokenizer

_ROLES = ("system", "user", "assistant", "model")
_MARKER = re.compile(r"<\|[^|>]+\|>|<[a-z_]+>")  # a special token written as text


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
  """One chat format. Every turn is `header(role) + content + end_of_turn + separator`."""

  name: str  # 'gemma' | 'chatml' | 'llama3'
  header: str  # turn header; '{role}' is replaced by the role name
  end_of_turn: str  # closes every turn; the model samples it at the end of its attempt
  separator: str = "\n"  # text between one turn's end_of_turn and the next header
  model_role: str = "assistant"  # the model's role name in headers ('model' for Gemma)
  stop_tokens: tuple[str, ...] = ()  # tokens that end a model turn; () = (end_of_turn,)
  # Markers the vocabulary must hold as single ids; () = every <tag> or <|tag|> that header and
  # end_of_turn write, since a marker split into ordinary pieces silently corrupts each prompt.
  required_tokens: tuple[str, ...] = ()
  fold_system: bool = False  # no system role: system text prefixes the first user turn
  system_joiner: str = "\n\n"  # between folded system text and the first user text
  default_system: str | None = None  # system message used when a conversation has none
  trim_content: bool = False  # strip() each message's content, as the HF template does
  add_bos: bool = False  # the model expects a BOS id before the first turn

  def __post_init__(self):
    if not self.stop_tokens:
      object.__setattr__(self, "stop_tokens", (self.end_of_turn,))
    if not self.required_tokens:
      markers = tuple(_MARKER.findall(self.header + self.end_of_turn))
      object.__setattr__(self, "required_tokens", markers)

  def _header(self, role: str) -> str:
    return self.header.replace("{role}", role)

  def _content(self, text: str) -> str:
    return text.strip() if self.trim_content else text

  def render(
    self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True
  ) -> str:
    """The conversation as the model's HF chat template renders it (without BOS).

    Args:
      messages: dicts with 'role' ('system' first if any, then 'user'/'assistant' alternating,
        starting with 'user'; 'model' is accepted for 'assistant') and 'content' (str).
      add_generation_prompt: end with the model-turn header, ready for sampling.
    """
    messages = [self._check_message(i, m) for i, m in enumerate(messages)]
    system = None
    offset = int(bool(messages) and messages[0][0] == "system")  # index shift for errors
    if offset:
      system = messages.pop(0)[1]
    elif self.default_system is not None:
      system = self.default_system
    for i, (role, _) in enumerate(messages):
      want = "user" if i % 2 == 0 else "assistant"
      if role != want:
        index = i + offset
        raise ValueError(
          f"{self.name} chat template: message {index} has role {role!r} where {want!r} is "
          "needed; after an optional first system message, turns must alternate "
          "user/assistant starting with user"
        )
    out = []
    if system is not None and not self.fold_system:
      out.append(self._header("system") + self._content(system) + self.end_of_turn + self.separator)
    for i, (role, content) in enumerate(messages):
      content = self._content(content)
      if i == 0 and system is not None and self.fold_system:
        # Gemma has no system role; its HF template prefixes the first user turn, untrimmed.
        content = system + self.system_joiner + content
      name = self.model_role if role == "assistant" else role
      out.append(self._header(name) + content + self.end_of_turn + self.separator)
    if add_generation_prompt:
      out.append(self._header(self.model_role))
    return "".join(out)

  def _check_message(self, index: int, message: Mapping[str, str]) -> tuple[str, str]:
    if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
      raise ValueError(
        f"{self.name} chat template: message {index} must be a dict with 'role' and 'content', "
        f"got {message!r}"
      )
    role, content = message["role"], message["content"]
    if role not in _ROLES:
      raise ValueError(f"{self.name} chat template: message {index} has unknown role {role!r}")
    if role == "system" and index != 0:
      raise ValueError(f"{self.name} chat template: system message {index} must come first")
    if not isinstance(content, str):
      raise ValueError(
        f"{self.name} chat template: message {index} content must be str, "
        f"got {type(content).__name__}"
      )
    return ("assistant" if role == "model" else role), content

  def first_turn(self, user_text: str, system: str | None = None) -> str:
    """Prompt for attempt 1: everything up to and including the model-turn header.

    `system=None` uses the template's `default_system` (SmolLM2's built-in prompt for ChatML).
    """
    messages = [] if system is None else [{"role": "system", "content": system}]
    return self.render([*messages, {"role": "user", "content": user_text}])

  def next_turn(self, user_text: str) -> str:
    """Text after a model attempt whose stop token (end_of_turn) was already sampled."""
    return (
      self.separator
      + self._header("user")
      + self._content(user_text)
      + self.end_of_turn
      + self.separator
      + self._header(self.model_role)
    )

  def check_tokenizer(self, tokenizer: Tokenizer) -> None:
    """Raises, naming the token and the tokenizer file, if a marker is not a single id."""
    tokenizer.require(self.required_tokens, purpose=f"the {self.name} chat template")
    if self.add_bos and tokenizer.bos_id is None:
      raise ValueError(
        f"{tokenizer.source}: the {self.name} chat template needs a BOS token; none is defined"
      )

  def first_turn_ids(self, tokenizer: Tokenizer, user_text: str, system: str | None = None):
    """Ids of `first_turn`, with the BOS id when the format expects one."""
    return tokenizer.encode(self.first_turn(user_text, system), add_bos=self.add_bos)

  def next_turn_ids(self, tokenizer: Tokenizer, user_text: str) -> list[int]:
    """Ids of `next_turn`, appended right after a sampled stop id."""
    return tokenizer.encode(self.next_turn(user_text))

  def close_turn_ids(self, tokenizer: Tokenizer) -> list[int]:
    """Ids that close a model turn the sampler cut at max_new_tokens (no stop id sampled), so
    that `next_turn_ids` follow a closed turn exactly as the chat template renders it."""
    return tokenizer.encode(self.end_of_turn)

  def stop_ids(self, tokenizer: Tokenizer) -> tuple[int, ...]:
    """EOS and this format's end-of-turn ids in `tokenizer`, deduplicated."""
    return tuple(dict.fromkeys([tokenizer.eos_id, *map(tokenizer.id_of, self.stop_tokens)]))


# Gemma's and Llama 3's HF templates both open with bos_token and `| trim` every message.
_TRIMMED_AFTER_BOS = dict(trim_content=True, add_bos=True)
TEMPLATES: dict[str, ChatTemplate] = {
  # Gemma 3's HF template (text only); Gemma 1/2 differ only in rejecting a system message.
  "gemma": ChatTemplate(
    name="gemma",
    header="<start_of_turn>{role}\n",
    end_of_turn="<end_of_turn>",
    model_role="model",
    fold_system=True,
    **_TRIMMED_AFTER_BOS,
  ),
  # HuggingFaceTB/SmolLM2-*-Instruct's template: ChatML plus a default system message.
  "chatml": ChatTemplate(
    name="chatml",
    header="<|im_start|>{role}\n",
    end_of_turn="<|im_end|>",
    default_system="You are a helpful AI assistant named SmolLM, trained by Hugging Face",
  ),
  # Meta-Llama-3-*-Instruct's template (3.1+ add a dated system preamble; not reproduced).
  "llama3": ChatTemplate(
    name="llama3",
    header="<|start_header_id|>{role}<|end_header_id|>\n\n",
    end_of_turn="<|eot_id|>",
    separator="",
    **_TRIMMED_AFTER_BOS,
  ),
}


def get_template(name: str, **overrides) -> ChatTemplate:
  """The named template, with fields replaced by `overrides` (e.g. `default_system=None`)."""
  if name not in TEMPLATES:
    raise ValueError(f"unknown chat template {name!r}; known: {', '.join(sorted(TEMPLATES))}")
  try:
    return dataclasses.replace(TEMPLATES[name], **overrides)
  except TypeError as e:
    fields = ", ".join(f.name for f in dataclasses.fields(ChatTemplate))
    raise ValueError(f"get_template({name!r}): bad override ({e}); fields: {fields}") from e
