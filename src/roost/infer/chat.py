"""Chat prompts from the model's own chat template (`tokenizer_config.json` → `chat_template`, a Jinja template as
in transformers), rendered in a sandbox; ChatML when a model has none. Used by the server and compose/reply.
"""

from __future__ import annotations

from typing import Any

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from roost.errors import RoostError

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class ChatTemplate:
    def __init__(self, template: str | None, special: dict[str, Any] | None = None):
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

        def raise_exception(msg: str) -> None:
            raise TemplateError(msg)

        env.globals["raise_exception"] = raise_exception
        self.source = template or CHATML
        try:
            self.template = env.from_string(self.source)
        except TemplateError as e:
            raise RoostError(f"the model's chat_template does not parse: {e}") from None
        self.special = {k: v for k, v in (special or {}).items() if k.endswith("_token") and isinstance(v, str)}

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """Raises ValueError (a client error) when the template rejects the conversation."""
        try:
            return self.template.render(messages=messages, add_generation_prompt=add_generation_prompt, **self.special)
        except TemplateError as e:
            raise ValueError(f"the chat template rejected these messages: {e}") from None
