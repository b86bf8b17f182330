import { test } from 'node:test';
import assert from 'node:assert/strict';

import { chatTemplateFrom, LLAMA2_CHAT_TEMPLATE, LLAMA3_CHAT_TEMPLATE, renderChat } from './chat.js';
import type { ChatMessage } from './chat.js';
import { ggufTokenizer } from './gguf-tokenizer.js';
import { tinyVocab } from './tiny-vocab.js';
import { errorText as code } from '../testing/helpers.js';


const CONVERSATION: ChatMessage[] = [
  { role: 'system', content: 'You are terse.' },
  { role: 'user', content: 'Hi there ' },
  { role: 'assistant', content: ' Hello! ' },
  { role: 'user', content: 'Bye' },
];

test('Llama 2 template: system prompt folded into the first [INST], assistant turns closed by EOS', () => {
  const expected =
    '<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi there [/INST] Hello! </s>' + '<s>[INST] Bye [/INST]';
  assert.equal(renderChat(LLAMA2_CHAT_TEMPLATE, CONVERSATION, { bosToken: '<s>', eosToken: '</s>' }), expected);
  // The Llama 2 template has no generation prompt: [/INST] already hands over to the assistant.
  assert.equal(
    renderChat(LLAMA2_CHAT_TEMPLATE, CONVERSATION, { bosToken: '<s>', eosToken: '</s>', addGenerationPrompt: true }),
    expected,
  );
  assert.equal(
    renderChat(LLAMA2_CHAT_TEMPLATE, [{ role: 'user', content: ' Hi ' }], { bosToken: '<s>', eosToken: '</s>' }),
    '<s>[INST] Hi [/INST]',
  );
});

test('Llama 3 template: headers, trimmed content, <|eot_id|>, and the generation prompt', () => {
  const messages = CONVERSATION.slice(0, 3);
  const turns =
    '<|begin_of_text|>' +
    '<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>' +
    '<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>' +
    '<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>';
  assert.equal(renderChat(LLAMA3_CHAT_TEMPLATE, messages, { bosToken: '<|begin_of_text|>' }), turns);
  assert.equal(
    renderChat(LLAMA3_CHAT_TEMPLATE, messages, { bosToken: '<|begin_of_text|>', addGenerationPrompt: true }),
    turns + '<|start_header_id|>assistant<|end_header_id|>\n\n',
  );
  assert.equal(
    renderChat(LLAMA3_CHAT_TEMPLATE, [{ role: 'user', content: 'x' }], { addGenerationPrompt: true }),
    '<|start_header_id|>user<|end_header_id|>\n\nx<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n',
  );
});

test('a rendered Llama 3 prompt tokenizes its special tokens as single tokens', () => {
  const vocab = tinyVocab('gpt2');
  const t = ggufTokenizer(vocab);
  const prompt = renderChat(LLAMA3_CHAT_TEMPLATE, [{ role: 'user', content: 'Hi' }], {
    bosToken: '<|begin_of_text|>',
    addGenerationPrompt: true,
  });
  const ids = t.encode(prompt, { addSpecial: false });
  const id = (s: string) => vocab.tokens.indexOf(s);
  assert.deepEqual(ids.slice(0, 2), [id('<|begin_of_text|>'), id('<|start_header_id|>')]);
  assert.equal(ids.filter((x) => x === id('<|eot_id|>')).length, 1);
  assert.equal(t.decode(ids), prompt);
});

test('raise_exception in a template is a one-line usage error', () => {
  assert.equal(
    code(() => renderChat(LLAMA2_CHAT_TEMPLATE, [{ role: 'user', content: 'a' }, { role: 'user', content: 'b' }], {})),
    'usage: chat template error: Conversation roles must alternate user/assistant/user/assistant/...',
  );
  assert.equal(
    code(() => renderChat("{{ raise_exception('first line\nsecond line') }}", [])),
    'usage: chat template error: first line second line',
  );
});

test('a template that does not parse is a one-line config error', () => {
  assert.match(code(() => renderChat('{% if %}', [])), /^config: chat template does not parse: /);
  assert.match(code(() => renderChat('{% for m in messages %}', [])), /^config: chat template does not parse: /);
});

test('extra variables and content parts reach the template', () => {
  assert.equal(
    renderChat('{{ date_string }}|{{ messages|length }}|{{ add_generation_prompt }}', [{ role: 'user', content: 'x' }], {
      extra: { date_string: '26 Jul 2024', messages: 'cannot replace messages' },
    }),
    '26 Jul 2024|1|false',
  );
  const llava =
    "{% for m in messages %}{{ m['role'] }}: {% for p in m['content'] %}" +
    "{% if p['type'] == 'image' %}<image>\n{% else %}{{ p['text'] }}{% endif %}{% endfor %}\n{% endfor %}";
  assert.equal(
    renderChat(llava, [{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: 'What is this?' }] }]),
    'user: <image>\nWhat is this?', // the newline right after {% endfor %} goes: trim_blocks, as in transformers
  );
});

test('chatTemplateFrom picks the tokenizer_config template, the default of a list, or the GGUF one', () => {
  assert.equal(chatTemplateFrom({ chat_template: 'A' }, 'G'), 'A');
  assert.equal(
    chatTemplateFrom({ chat_template: [{ name: 'tool_use', template: 'T' }, { name: 'default', template: 'D' }] }),
    'D',
  );
  assert.equal(chatTemplateFrom({ chat_template: [{ name: 'rag', template: 'R' }] }), 'R');
  assert.equal(chatTemplateFrom({}, 'G'), 'G');
  assert.equal(chatTemplateFrom(undefined, 'G'), 'G');
  assert.equal(chatTemplateFrom({ chat_template: '' }, undefined), undefined);
  assert.equal(chatTemplateFrom(), undefined);
  assert.match(code(() => chatTemplateFrom({ chat_template: 3 })), /^config: tokenizer_config\.json chat_template must be/);
  assert.match(code(() => chatTemplateFrom({ chat_template: [{ name: 'default' }] })), /^config: .*list entries/);
});
