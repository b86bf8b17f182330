/**
 * Every error halfpipe raises on bad input is a HalfpipeError: a one-line message that names the
 * problem, plus a stable `code` that callers (the CLI, the server) can map to an exit status.
 */
export class HalfpipeError extends Error {
  override readonly name = 'HalfpipeError';
  constructor(
    readonly code: HalfpipeErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export type HalfpipeErrorCode =
  | 'dtype' // unknown dtype or a value that cannot be stored
  | 'shape' // shapes, strides or views that do not fit
  | 'layout' // a memory layout a kernel does not support
  | 'rope' // invalid RoPE arguments (positions, rotary dims, tables)
  | 'config' // an invalid model or scaling configuration
  | 'numerics' // a forward produced non-finite values
  | 'usage'; // bad command-line or API usage

export function fail(code: HalfpipeErrorCode, message: string): never {
  throw new HalfpipeError(code, message);
}
