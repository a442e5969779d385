// A message transport on a Node byte stream (TLS, unix socket): LSP frames.
import type { Duplex } from "node:stream";
import { encodeJsonFrame, FrameDecoder } from "./framing.js";
import type { MessageTransport, TransportEvents } from "./rpc.js";

/** LSP-framed messages on `stream`; a frame over `maxFrameBytes` ends the connection. */
export class StreamTransport implements MessageTransport {
  constructor(
    private readonly stream: Duplex,
    private readonly maxFrameBytes?: number,
  ) {}

  start(events: TransportEvents): void {
    const decoder = new FrameDecoder(this.maxFrameBytes);
    this.stream.on("data", (chunk: Buffer) => {
      let frames: Buffer[];
      try {
        frames = decoder.push(chunk);
      } catch (e) {
        this.stream.destroy();
        events.closed(`the host sent a bad frame: ${(e as Error).message}`);
        return;
      }
      for (const frame of frames) events.message(frame.toString("utf8"));
    });
    this.stream.on("error", (e) => events.closed(e.message));
    this.stream.on("close", () => events.closed("closed by the host"));
  }

  send(text: string): void {
    this.stream.write(encodeJsonFrame(text));
  }

  close(): void {
    this.stream.end();
    this.stream.destroy();
  }
}
