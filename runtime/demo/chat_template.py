"""ChatML chat templates (Jinja) for the demo model, stored in tokenizer_config.json as `chat_template`.

Roles: system (first message only), user, assistant (optionally with `tool_calls`), tool (consecutive tool
messages are grouped into one user turn of `<tool_response>` blocks). Content is a string, None, or a list
of `{"type": "text", "text": ...}` parts. With `tools`, their JSON schemas go into the system turn.

The qwen3 variant adds thinking: assistant turns after the last user message keep their reasoning
(`reasoning_content`, or a `<think>…</think>` prefix of the content) as a `<think>` block, earlier ones drop
it, and `enable_thinking=false` ends the generation prompt with an empty `<think>\\n\\n</think>\\n\\n`.
Every tag trims whitespace (`{%-`), so only the quoted strings reach the output.
"""

from __future__ import annotations

_CONTENT_MACRO = """
{%- macro render_content(content) -%}
    {%- if content is string -%}
        {{- content -}}
    {%- elif content is none or content is undefined -%}
    {%- else -%}
        {%- for part in content -%}
            {%- if part.type == 'text' -%}
                {{- part.text -}}
            {%- else -%}
                {{- raise_exception('unsupported content part type: ' ~ part.type) -}}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro -%}
"""

_SYSTEM = """
{%- set ns = namespace(last_user=-1) -%}
{%- for message in messages -%}
    {%- if message.role == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}
{%- endfor -%}
{%- set has_system = messages | length > 0 and messages[0].role == 'system' -%}
{%- if tools -%}
    {{- '<|im_start|>system\\n' -}}
    {%- if has_system -%}{{- render_content(messages[0].content) + '\\n\\n' -}}{%- endif -%}
    {{- '# Tools\\n\\nYou may call one or more functions. Their signatures are inside <tools></tools>:\\n<tools>' -}}
    {%- for tool in tools -%}{{- '\\n' + (tool | tojson) -}}{%- endfor -%}
    {{- '\\n</tools>\\n\\nFor each call, reply with a JSON object inside <tool_call></tool_call>:\\n' -}}
    {{- '<tool_call>\\n{"name": <function-name>, "arguments": <args-json-object>}\\n</tool_call><|im_end|>\\n' -}}
{%- elif has_system -%}
    {{- '<|im_start|>system\\n' + render_content(messages[0].content) + '<|im_end|>\\n' -}}
{%- endif -%}
"""

_ASSISTANT_PLAIN = """
        {{- '<|im_start|>assistant\\n' + content -}}
"""

_ASSISTANT_THINKING = """
        {%- set reasoning = message.reasoning_content if message.reasoning_content is string else '' -%}
        {%- if '</think>' in content -%}
            {%- set reasoning = content.split('</think>')[0].split('<think>')[-1].strip('\\n') -%}
            {%- set content = content.split('</think>')[-1].lstrip('\\n') -%}
        {%- endif -%}
        {%- if loop.index0 > ns.last_user and reasoning -%}
            {{- '<|im_start|>assistant\\n<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n' + content -}}
        {%- else -%}
            {{- '<|im_start|>assistant\\n' + content -}}
        {%- endif -%}
"""

_MESSAGES = """
{%- for message in messages -%}
    {%- if message.role == 'system' -%}
        {%- if not loop.first -%}{{- raise_exception('a system message must come first') -}}{%- endif -%}
    {%- elif message.role == 'user' -%}
        {{- '<|im_start|>user\\n' + render_content(message.content) + '<|im_end|>\\n' -}}
    {%- elif message.role == 'assistant' -%}
        {%- set content = render_content(message.content) -%}
@ASSISTANT@
        {%- for call in message.tool_calls or [] -%}
            {%- set fn = call.function if call.function is defined else call -%}
            {%- set args = fn.arguments if fn.arguments is string else (fn.arguments | tojson) -%}
            {%- if content or not loop.first -%}{{- '\\n' -}}{%- endif -%}
            {{- '<tool_call>\\n{"name": ' + (fn.name | tojson) + ', "arguments": ' + args + '}\\n</tool_call>' -}}
        {%- endfor -%}
        {{- '<|im_end|>\\n' -}}
    {%- elif message.role == 'tool' -%}
        {%- if loop.first or loop.previtem.role != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}
        {{- '\\n<tool_response>\\n' + render_content(message.content) + '\\n</tool_response>' -}}
        {%- if loop.last or loop.nextitem.role != 'tool' -%}{{- '<|im_end|>\\n' -}}{%- endif -%}
    {%- else -%}
        {{- raise_exception('unknown role: ' ~ message.role) -}}
    {%- endif -%}
{%- endfor -%}
"""

_GENERATION_PROMPT_PLAIN = """
{%- if add_generation_prompt -%}
    {{- '<|im_start|>assistant\\n' -}}
{%- endif -%}
"""

_GENERATION_PROMPT_THINKING = """
{%- if add_generation_prompt -%}
    {{- '<|im_start|>assistant\\n' -}}
    {%- if enable_thinking is defined and enable_thinking is false -%}
        {{- '<think>\\n\\n</think>\\n\\n' -}}
    {%- endif -%}
{%- endif -%}
"""


def chat_template_for(arch: str) -> str:
    """The Jinja chat template for `arch` (qwen3 gets the thinking variant)."""
    thinking = arch == "qwen3"
    messages = _MESSAGES.replace(
        "@ASSISTANT@", (_ASSISTANT_THINKING if thinking else _ASSISTANT_PLAIN).strip("\n")
    )
    generation = _GENERATION_PROMPT_THINKING if thinking else _GENERATION_PROMPT_PLAIN
    return "".join(part.strip("\n") for part in (_CONTENT_MACRO, _SYSTEM, messages, generation))
