// A fake language model on loopback speaking the OpenAI chat-completions
// streaming protocol (what tests/common/fake_model.rs does for the Rust
// tests), so that the real OpenCode runs a whole turn offline: a prompt gets
// a `bash` tool call of the command set (or, for `TASK:AGENT:COMMAND`, a
// `task` call starting sub-agent AGENT, whose own prompt gets the `bash` call
// of COMMAND), the tool's result some reasoning and a final text, a request
// without tools (a title) a short answer. `failNext` answers the next
// request with tools with an HTTP error.
import * as http from "node:http";

function chunk(delta, finish = null) {
  const body = { id: "chatcmpl-fake", object: "chat.completion.chunk", created: 1, model: "fake-model", choices: [{ index: 0, delta, finish_reason: finish }] };
  return `data: ${JSON.stringify(body)}\n\n`;
}

export class FakeModel {
  command = "echo hello";
  failure = undefined;
  requests = 0;
  port = 0;

  async start() {
    this.server = http.createServer((req, res) => {
      const parts = [];
      let size = 0;
      req.on("data", (d) => {
        size += d.length;
        if (size < 8 << 20) parts.push(d);
      });
      req.on("end", () => this.answer(req, res, Buffer.concat(parts)));
    });
    await new Promise((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.port = this.server.address().port;
    return this;
  }

  failNext(status, message) {
    this.failure = { status, message };
  }

  answer(req, res, raw) {
    if (req.method !== "POST" || !req.url.includes("/chat/completions")) {
      res.writeHead(404, { connection: "close" }).end();
      return;
    }
    this.requests++;
    let body = {};
    try {
      body = JSON.parse(raw.toString("utf8"));
    } catch {
      // Answered as a request without tools.
    }
    const messages = Array.isArray(body.messages) ? body.messages : [];
    const tools = Array.isArray(body.tools) ? body.tools.map((t) => t?.function?.name) : undefined;
    if (tools && this.failure) {
      const { status, message } = this.failure;
      this.failure = undefined;
      res.writeHead(status, { "content-type": "application/json", connection: "close" }).end(JSON.stringify({ error: { message, type: "fake_error" } }));
      return;
    }
    let out = "";
    if (!tools) {
      out += chunk({ role: "assistant", content: "A fake title" }) + chunk({}, "stop");
    } else if (messages[messages.length - 1]?.role === "tool") {
      out += chunk({ role: "assistant", reasoning_content: "The tool answered." });
      out += chunk({ content: "Done: " }) + chunk({ content: "the command ran." }) + chunk({}, "stop");
    } else {
      const m = /^TASK:([^:]+):(.*)$/s.exec(this.command);
      const [tool, args] =
        m && tools.includes("task")
          ? ["task", { description: "Run it in a sub-agent", prompt: "run the command", subagent_type: m[1] }]
          : ["bash", { command: m ? m[2] : this.command, description: "Run the command" }];
      const call = `call_${messages.length}`;
      out += chunk({ role: "assistant", tool_calls: [{ index: 0, id: call, type: "function", function: { name: tool, arguments: "" } }] });
      out += chunk({ tool_calls: [{ index: 0, function: { arguments: JSON.stringify(args) } }] });
      out += chunk({}, "tool_calls");
    }
    out += "data: [DONE]\n\n";
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "close" }).end(out);
  }

  /** An opencode.json using this model, with these `permission` and `agent` settings. */
  opencodeJson(permission = { bash: "ask" }, agent = {}) {
    return JSON.stringify({
      $schema: "https://opencode.ai/config.json",
      provider: { fake: { npm: "@ai-sdk/openai-compatible", name: "Fake", options: { baseURL: `http://127.0.0.1:${this.port}/v1` }, models: { "fake-model": { name: "Fake model" } } } },
      model: "fake/fake-model",
      small_model: "fake/fake-model",
      permission,
      agent,
    });
  }

  async stop() {
    this.server?.closeAllConnections?.();
    await new Promise((r) => this.server?.close(r) ?? r());
  }
}
