// LSP base-protocol framing: `Content-Length: N\r\n\r\n` + N bytes of JSON.

/** Encodes one message as a frame. */
export function encodeFrame(message: unknown): Buffer {
  return encodeJsonFrame(JSON.stringify(message));
}

/** Encodes a message already in JSON text as a frame. */
export function encodeJsonFrame(json: string): Buffer {
  const body = Buffer.from(json, "utf8");
  return Buffer.concat([Buffer.from(`Content-Length: ${body.length}\r\n\r\n`, "ascii"), body]);
}

/** A frame the peer sent that cannot be read; the connection must close. */
export class FramingError extends Error {}

/**
 * Cuts a byte stream into frames. Headers are bounded, and a body larger than
 * `maxFrameBytes` is refused before it is buffered.
 */
export class FrameDecoder {
  private buffer: Buffer = Buffer.alloc(0);

  constructor(private readonly maxFrameBytes = 64 * 1024 * 1024) {}

  /** Adds bytes and returns every complete frame's body. */
  push(chunk: Buffer): Buffer[] {
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
    const frames: Buffer[] = [];
    for (;;) {
      const end = this.buffer.indexOf("\r\n\r\n");
      if (end < 0) {
        if (this.buffer.length > 8192) throw new FramingError("frame header longer than 8 KiB");
        return frames;
      }
      let length: number | undefined;
      for (const line of this.buffer.subarray(0, end).toString("ascii").split("\r\n")) {
        const colon = line.indexOf(":");
        if (colon < 0) throw new FramingError(`malformed header line ${JSON.stringify(line)}`);
        if (line.slice(0, colon).trim().toLowerCase() === "content-length") {
          const value = line.slice(colon + 1).trim();
          if (!/^\d+$/.test(value)) throw new FramingError(`bad Content-Length ${JSON.stringify(value)}`);
          length = Number(value);
        }
      }
      if (length === undefined) throw new FramingError("frame without Content-Length");
      if (length > this.maxFrameBytes) throw new FramingError(`frame of ${length} bytes is over the ${this.maxFrameBytes}-byte limit`);
      const start = end + 4;
      if (this.buffer.length < start + length) return frames;
      frames.push(this.buffer.subarray(start, start + length));
      this.buffer = this.buffer.subarray(start + length);
    }
  }
}
