// Server-Sent Events over fetch (EventSource can neither POST nor send an Authorization header).
// Yields the parsed JSON of each event's data; comments (keep-alives) are skipped.

export class SseParser {
  constructor() {
    this.buffer = "";
    this.data = [];
    this.type = "";
  }

  feed(text) {
    this.buffer += text;
    const out = [];
    let newline;
    while ((newline = this.buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = this.buffer.slice(0, newline);
      const width = this.buffer.startsWith("\r\n", newline) ? 2 : 1;
      this.buffer = this.buffer.slice(newline + width);
      if (line === "") {
        if (this.data.length) out.push({ type: this.type || "message", data: this.data.join("\n") });
        this.data = [];
        this.type = "";
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "data") this.data.push(value);
        else if (field === "event") this.type = value;
      }
    }
    return out;
  }
}

/** Read an SSE response body, calling onEvent(json) per event; resolves when the body ends. */
export async function readSse(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const parser = new SseParser();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    for (const event of parser.feed(decoder.decode(value, { stream: true }))) {
      let parsed;
      try {
        parsed = JSON.parse(event.data);
      } catch (err) {
        console.warn("ignoring an SSE event that is not JSON", event.data, err);
        continue;
      }
      onEvent(parsed);
    }
  }
}
