/**
 * Streaming detokenization that never splits a UTF-8 character, by the prefix-offset technique of Hugging Face
 * text-generation-inference and vLLM:
 *
 * - keep a window of recent token ids: `[prefix | unread]`, where the prefix tokens' text was already emitted;
 * - on each new token, decode the window with and without the unread tokens and emit the difference;
 * - emit nothing while the window's text ends in U+FFFD (the tail is an incomplete byte sequence, e.g. the first
 *   two of the three byte-fallback tokens <0xE2><0x82><0xAC> = "€", or a byte-level BPE token holding half a
 *   character) or does not grow; the held tokens are decoded again, completed, with the next token;
 * - decoding the prefix along with the new tokens gives tokenizers that drop the leading space of the first
 *   decoded token (SentencePiece "▁word") the context to keep the space of a token in the middle of the text.
 *
 * Emitted text is the difference in length, as in TGI, so it assumes decode(window) starts with
 * decode(prefix); true for byte-level BPE and SentencePiece decoders (no cross-token clean-up of spaces).
 *
 * A genuine U+FFFD at the end of the text (or invalid bytes) is emitted with the next token, or by flush().
 */

/** How many context tokens (e.g. the end of the prompt) to keep as the first prefix. */
const CONTEXT_TOKENS = 6;

export class StreamingDetokenizer {
  /** the window: ids[0, read) is the prefix (already emitted), ids[read, ...) is not emitted yet */
  private ids: number[];
  private read: number;
  /** decode(ids[0, read)), computed lazily */
  private prefixText: string | undefined;

  /**
   * `decode` turns ids into text (as the tokenizer's decode, special tokens skipped as wanted).
   * `context`: tokens that precede the stream (e.g. the prompt); its last few serve as the first prefix, so the
   * first generated token keeps a leading space that decoding it alone would drop. They are never emitted.
   */
  constructor(
    private readonly decode: (ids: readonly number[]) => string,
    context: readonly number[] = [],
  ) {
    this.ids = context.slice(Math.max(0, context.length - CONTEXT_TOKENS));
    this.read = this.ids.length;
    this.prefixText = this.ids.length === 0 ? '' : undefined;
  }

  /** Adds a token; returns the text it completes (possibly empty, possibly more than this token's own text). */
  push(id: number): string {
    this.ids.push(id);
    const prefix = (this.prefixText ??= this.decode(this.ids.slice(0, this.read)));
    const text = this.decode(this.ids);
    if (text.length <= prefix.length || text.endsWith('\uFFFD')) return '';
    this.advance(text);
    return text.slice(prefix.length);
  }

  /** Emits whatever is held (an incomplete character comes out as U+FFFD) and starts over with an empty window. */
  flush(): string {
    let out = '';
    if (this.read < this.ids.length) {
      const prefix = (this.prefixText ??= this.decode(this.ids.slice(0, this.read)));
      const text = this.decode(this.ids);
      if (text.length > prefix.length) out = text.slice(prefix.length);
    }
    this.ids = [];
    this.read = 0;
    this.prefixText = '';
    return out;
  }

  /**
   * Everything in the window has been emitted: the new prefix is the tokens just emitted, unless they decode to
   * nothing on their own (a skipped special token, a lone "▁" whose space is stripped): then the old prefix stays
   * too, so that the next token still has text before it.
   */
  private advance(text: string): void {
    const fresh = this.read === 0 ? this.ids : this.ids.slice(this.read);
    const freshText = this.read === 0 ? text : this.decode(fresh);
    if (freshText.length > 0) {
      this.ids = fresh;
      this.prefixText = freshText;
    } else {
      this.prefixText = text;
    }
    this.read = this.ids.length;
  }
}
