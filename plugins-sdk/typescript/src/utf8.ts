// UTF-8 decoding from the packed batch, without per-field garbage on the
// common path.
//
// Most fields (ids, stream names, event types, and JSON with only ASCII) are
// ASCII. For them `String.fromCharCode` over the bytes builds the string
// directly, with no intermediate view or decoder state; anything else goes
// through a fatal `TextDecoder`, so malformed UTF-8 is an error, never a
// replacement character.

interface Utf8Decoder {
  decode(bytes: Uint8Array): string;
}

const globals = globalThis as unknown as {
  TextDecoder: new (label: string, options: { fatal: boolean }) => Utf8Decoder;
  TextEncoder: new () => { encode(text: string): Uint8Array };
};

const decoder = new globals.TextDecoder("utf-8", { fatal: true });
const encoder = new globals.TextEncoder();

/** Fields up to this many bytes are decoded by hand when ASCII; longer ones by the decoder. */
const SHORT_FIELD = 64;

/** The text in `bytes[start..end)`, or a `MalformedBatch` error if it is not UTF-8 or out of bounds. */
export function decodeUtf8(bytes: Uint8Array, start: number, end: number): string {
  if (!(start <= end && end <= bytes.length)) {
    throw new MalformedBatch(
      `a field spans bytes ${start}..${end} of ${bytes.length}, outside the text`,
    );
  }
  const length = end - start;
  if (length === 0) return "";
  if (length <= SHORT_FIELD) {
    let ascii = true;
    for (let i = start; i < end; i++) {
      if ((bytes[i] as number) > 0x7f) {
        ascii = false;
        break;
      }
    }
    if (ascii) {
      return String.fromCharCode.apply(null, bytes.subarray(start, end) as unknown as number[]);
    }
  }
  try {
    return decoder.decode(bytes.subarray(start, end));
  } catch {
    throw new MalformedBatch(`the field at bytes ${start}..${end} is not UTF-8, or splits a character`);
  }
}

/** UTF-8 bytes of `text`. */
export function encodeUtf8(text: string): Uint8Array {
  return encoder.encode(text);
}

/** The host sent a batch that breaks the contract's layout. */
export class MalformedBatch extends Error {
  constructor(message: string) {
    super(`malformed event batch from the host: ${message}`);
    this.name = "MalformedBatch";
  }
}
