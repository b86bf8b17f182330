/**
 * A minimal streaming chat client for the serving bench: raw `fetch` to POST /v1/chat/completions
 * with stream: true, and a hand-written Server-Sent-Events parser, so the bench times exactly the
 * bytes the server sends (no SDK buffering in between).
 *
 * Timing contract: every time is `performance.now()` in ms, measured from just before `fetch` is
 * called. The first token's time is that of the first chunk whose delta.content is a non-empty
 * string (OpenAI's first chunk carries only the role with content '', which is not a token).
 * Completion tokens are the usage chunk's `completion_tokens` when the server sends one
 * (stream_options.include_usage), else the count of chunks that carried content.
 */
import { performance } from 'node:perf_hooks';

/**
 * Feeds decoded text to `onData` one event at a time: the `data:` lines of an event (joined by
 * '\n', as the SSE spec says) once its blank line arrives. Handles \n, \r\n and \r line ends and
 * events split anywhere across network chunks; comment lines (':') and other fields are ignored.
 */
export class SseParser {
  private buffer = '';
  private data: string[] = [];

  constructor(private readonly onData: (data: string) => void) {}

  push(text: string): void {
    this.buffer += text;
    for (;;) {
      const m = /\r\n|\r|\n/.exec(this.buffer);
      if (!m) return;
      // A lone '\r' at the very end may be the first half of '\r\n': wait for the next chunk.
      if (m[0] === '\r' && m.index === this.buffer.length - 1) return;
      const line = this.buffer.slice(0, m.index);
      this.buffer = this.buffer.slice(m.index + m[0].length);
      this.line(line);
    }
  }

  /** The stream ended: an event without its closing blank line is dropped, as the spec says. */
  end(): void {
    // A held-back '\r' was a line end after all.
    if (this.buffer.endsWith('\r')) this.line(this.buffer.slice(0, -1));
    this.buffer = '';
    this.data = [];
  }

  private line(line: string): void {
    if (line === '') {
      if (this.data.length > 0) this.onData(this.data.join('\n'));
      this.data = [];
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') this.data.push(value);
  }
}

export interface StreamTiming {
  /** request start -> first non-empty content delta (ms); NaN when no content came */
  ttftMs: number;
  /** request start -> end of the stream (ms) */
  totalMs: number;
  /** first content delta -> last content delta (ms): the decode phase seen by the client */
  decodeMs: number;
  completionTokens: number;
  /** chunks that carried non-empty content */
  contentChunks: number;
  finishReason: string | null;
  /** whether the stream ended with `data: [DONE]` */
  done: boolean;
}

interface ChatChunk {
  choices?: Array<{ delta?: { content?: string | null }; finish_reason?: string | null }>;
  usage?: { completion_tokens?: number } | null;
  error?: { message?: string };
}

/** Sends one streaming chat request and times it; throws on an HTTP error or an error event. */
export async function streamChat(baseUrl: string, body: Record<string, unknown>, headers: Record<string, string> = {}): Promise<StreamTiming> {
  const t0 = performance.now();
  const res = await fetch(`${baseUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
  });
  if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  let first = NaN;
  let last = NaN;
  let contentChunks = 0;
  let usageTokens: number | undefined;
  let finishReason: string | null = null;
  let done = false;
  let failure: string | undefined;
  const parser = new SseParser((data) => {
    if (data === '[DONE]') {
      done = true;
      return;
    }
    const chunk = JSON.parse(data) as ChatChunk;
    if (chunk.error) {
      failure = chunk.error.message ?? JSON.stringify(chunk.error);
      return;
    }
    const choice = chunk.choices?.[0];
    const content = choice?.delta?.content;
    if (typeof content === 'string' && content.length > 0) {
      const now = performance.now();
      if (Number.isNaN(first)) first = now;
      last = now;
      contentChunks++;
    }
    if (choice?.finish_reason) finishReason = choice.finish_reason;
    if (chunk.usage && typeof chunk.usage.completion_tokens === 'number') usageTokens = chunk.usage.completion_tokens;
  });
  const decoder = new TextDecoder();
  for await (const bytes of res.body as unknown as AsyncIterable<Uint8Array>) parser.push(decoder.decode(bytes, { stream: true }));
  parser.push(decoder.decode());
  parser.end();
  if (failure !== undefined) throw new Error(`stream error: ${failure}`);
  const end = performance.now();
  return {
    ttftMs: first - t0,
    totalMs: end - t0,
    decodeMs: Number.isNaN(first) ? 0 : last - first,
    completionTokens: usageTokens ?? contentChunks,
    contentChunks,
    finishReason,
    done,
  };
}

/** The p-th percentile (0..100) by nearest rank: the smallest sample with at least p% at or below it. */
export function percentile(samples: readonly number[], p: number): number {
  const xs = samples.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  if (xs.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * xs.length);
  return xs[Math.min(xs.length, Math.max(1, rank)) - 1]!;
}
