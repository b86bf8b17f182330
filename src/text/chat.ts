/**
 * Chat templates: Jinja templates (as published in tokenizer_config.json or GGUF
 * tokenizer.chat_template) rendered with @huggingface/jinja, the way transformers'
 * apply_chat_template renders them: variables `messages`, `bos_token`, `eos_token`,
 * `add_generation_prompt`, plus any `extra` ones (e.g. `tools`, `date_string`).
 */
import { Template } from '@huggingface/jinja';

import { fail } from '../core/errors.js';
import { oneLine } from './tokenizer.js';

export type ChatContentPart = { type: 'text'; text: string } | { type: 'image' };

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | (string & {});
  content: string | ChatContentPart[];
}

export interface RenderChatOptions {
  /** Text of the BOS token (e.g. "<s>"); templates that write bos_token get '' when absent. */
  bosToken?: string;
  /** Text of the EOS token (e.g. "</s>"); '' when absent. */
  eosToken?: string;
  /** Append the header that starts the assistant's reply. */
  addGenerationPrompt?: boolean;
  /** More template variables. They cannot replace the four above. */
  extra?: Record<string, unknown>;
}

/**
 * Llama 2 chat, as in meta-llama/Llama-2-7b-chat-hf: the system prompt goes inside the first user
 * turn between <<SYS>> markers, each user turn is `<s>[INST] ... [/INST]`, each assistant turn is
 * ` ... </s>`, and roles must alternate user/assistant (after an optional system message).
 */
export const LLAMA2_CHAT_TEMPLATE =
  "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}" +
  "{% set system_message = messages[0]['content'] %}" +
  '{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}' +
  '{% for message in loop_messages %}' +
  "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}" +
  "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}" +
  '{% if loop.index0 == 0 and system_message != false %}' +
  "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}" +
  "{% else %}{% set content = message['content'] %}{% endif %}" +
  "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}" +
  "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}" +
  '{% endfor %}';

/**
 * Llama 3 Instruct, as in meta-llama/Meta-Llama-3-8B-Instruct: every turn is
 * `<|start_header_id|>{role}<|end_header_id|>\n\n{content, trimmed}<|eot_id|>`, BOS before the
 * first, and the generation prompt opens an assistant header.
 */
export const LLAMA3_CHAT_TEMPLATE =
  '{% set loop_messages = messages %}{% for message in loop_messages %}' +
  "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' %}" +
  '{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}' +
  '{{ content }}{% endfor %}' +
  "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

/** Parsed templates by source, so that a server does not re-parse the same template per request. */
const parsed = new Map<string, Template>();
const PARSED_LIMIT = 32;

function parse(template: string): Template {
  let t = parsed.get(template);
  if (t === undefined) {
    try {
      t = new Template(template);
    } catch (e) {
      fail('config', `chat template does not parse: ${oneLine(e)}`);
    }
    if (parsed.size >= PARSED_LIMIT) parsed.delete(parsed.keys().next().value!);
    parsed.set(template, t);
  }
  return t;
}

/**
 * Render `messages` with a Jinja chat template. A template that does not parse is a
 * HalfpipeError('config'); one that fails while rendering (including its own
 * raise_exception(...), e.g. roles that do not alternate) is a HalfpipeError('usage').
 * Both carry a one-line message.
 */
export function renderChat(template: string, messages: ChatMessage[], opts: RenderChatOptions = {}): string {
  if (typeof template !== 'string') fail('usage', 'chat template must be a string');
  const t = parse(template);
  const variables: Record<string, unknown> = {
    ...opts.extra,
    messages,
    bos_token: opts.bosToken ?? '',
    eos_token: opts.eosToken ?? '',
    add_generation_prompt: opts.addGenerationPrompt ?? false,
  };
  try {
    return t.render(variables);
  } catch (e) {
    fail('usage', `chat template error: ${oneLine(e)}`);
  }
}

/**
 * The chat template of a model: tokenizer_config.json's chat_template when present (a string, or a
 * list of {name, template} from which 'default' is taken, else the first), otherwise the GGUF
 * tokenizer.chat_template string; undefined when neither has one.
 */
export function chatTemplateFrom(tokenizerConfig?: Record<string, unknown>, ggufTemplate?: string): string | undefined {
  const ct = tokenizerConfig?.chat_template;
  if (typeof ct === 'string' && ct.length > 0) return ct;
  if (Array.isArray(ct) && ct.length > 0) {
    const named = ct as { name?: unknown; template?: unknown }[];
    const pick = named.find((e) => e?.name === 'default') ?? named[0];
    if (typeof pick?.template !== 'string') {
      fail('config', 'tokenizer_config.json chat_template list entries must be {name, template: string}');
    }
    return pick.template;
  }
  if (ct !== undefined && ct !== null && ct !== '' && !Array.isArray(ct)) {
    fail('config', 'tokenizer_config.json chat_template must be a string or a list of {name, template}');
  }
  if (typeof ggufTemplate === 'string' && ggufTemplate.length > 0) return ggufTemplate;
  return undefined;
}
