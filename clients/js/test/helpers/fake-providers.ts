/** Local servers that answer like OpenAI (`/v1/chat/completions`, `/v1/responses`) and Anthropic (`/v1/messages`). */

import { LocalServer, sendEvents, sendJson } from "./http.js";

export const OPENAI_MODEL = "gpt-4o-2024-08-06";
export const OPENAI_USAGE = {
  prompt_tokens: 1200,
  completion_tokens: 350,
  total_tokens: 1550,
  prompt_tokens_details: { cached_tokens: 200, audio_tokens: 0 },
  completion_tokens_details: { reasoning_tokens: 64 },
};
export const OPENAI_UNITS = {
  model: OPENAI_MODEL,
  inputTokens: 1000,
  outputTokens: 350,
  cacheReadTokens: 200,
  cacheWriteTokens: 0,
  requests: 1,
};
export const COMPLETION = {
  id: "chatcmpl-abc123",
  object: "chat.completion",
  created: 1_760_436_245,
  model: OPENAI_MODEL,
  choices: [{ index: 0, message: { role: "assistant", content: "Bonjour !", refusal: null }, finish_reason: "stop", logprobs: null }],
  usage: OPENAI_USAGE,
};
export const TEXT_PIECES = ["Bon", "jour", " !"];
export const RESPONSE_MODEL = "gpt-4.1-2025-04-14";
export const RESPONSE = {
  id: "resp_abc123",
  object: "response",
  created_at: 1_760_436_245,
  status: "completed",
  model: RESPONSE_MODEL,
  output: [
    {
      type: "message",
      id: "msg_1",
      status: "completed",
      role: "assistant",
      content: [{ type: "output_text", text: "Salut", annotations: [] }],
    },
  ],
  parallel_tool_calls: true,
  tool_choice: "auto",
  tools: [],
  usage: {
    input_tokens: 500,
    input_tokens_details: { cached_tokens: 100 },
    output_tokens: 40,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: 540,
  },
};
export const RESPONSE_UNITS = {
  model: RESPONSE_MODEL,
  inputTokens: 400,
  outputTokens: 40,
  cacheReadTokens: 100,
  cacheWriteTokens: 0,
  requests: 1,
};

function chunk(delta: Record<string, unknown>, finish: string | null = null, model = OPENAI_MODEL): Record<string, unknown> {
  return {
    id: "chatcmpl-abc123",
    object: "chat.completion.chunk",
    created: 1_760_436_245,
    model,
    choices: [{ index: 0, delta, finish_reason: finish, logprobs: null }],
  };
}

/** Answers like OpenAI; keeps the request bodies. */
export class FakeOpenAI {
  readonly bodies: Record<string, unknown>[] = [];
  failWith: number | undefined;
  /** The model chat completions answer with. */
  model = OPENAI_MODEL;
  /** Assistant messages (e.g. with `tool_calls`) the next chat completions answer with, in order, before COMPLETION's. */
  readonly replies: Record<string, unknown>[] = [];
  /** Whether a responses stream also sends the output item and content part events (the SDK's ResponseStream needs them). */
  itemEvents = false;

  private constructor(readonly server: LocalServer) {
    server.route("/v1/chat/completions", (request, res) => {
      const body = request.body as Record<string, unknown>;
      this.bodies.push(body);
      if (this.failWith !== undefined) {
        sendJson(res, this.failWith, { error: { message: "overloaded", type: "server_error", code: null } });
        return;
      }
      const reply = this.replies.shift();
      const finish = reply?.["tool_calls"] === undefined ? "stop" : "tool_calls";
      if (body["stream"] !== true) {
        const choices = reply === undefined ? COMPLETION.choices : [{ index: 0, message: reply, finish_reason: finish, logprobs: null }];
        sendJson(res, 200, { ...COMPLETION, model: this.model, choices });
        return;
      }
      const model = this.model;
      const calls = reply?.["tool_calls"] as Record<string, unknown>[] | undefined;
      const chunks = [
        chunk({ role: "assistant", content: "" }, null, model),
        ...(reply === undefined ? TEXT_PIECES.map((piece) => chunk({ content: piece }, null, model)) : []),
        ...(calls === undefined ? [] : [chunk({ tool_calls: calls.map((call, index) => ({ index, ...call })) }, null, model)]),
        chunk({}, finish, model),
      ];
      if ((body["stream_options"] as { include_usage?: boolean } | undefined)?.include_usage) {
        for (const item of chunks) item["usage"] = null;
        chunks.push({ ...chunk({}, null, model), choices: [], usage: OPENAI_USAGE });
      }
      sendEvents(res, chunks);
    });
    server.route("/v1/responses", (request, res) => {
      const body = request.body as Record<string, unknown>;
      this.bodies.push(body);
      if (body["stream"] !== true) {
        sendJson(res, 200, RESPONSE);
        return;
      }
      const started = { ...RESPONSE, status: "in_progress", output: [], usage: null };
      sendEvents(
        res,
        [
          { type: "response.created", sequence_number: 0, response: started },
          ...(this.itemEvents
            ? [
                { type: "response.output_item.added", sequence_number: 0, output_index: 0, item: { ...RESPONSE.output[0], status: "in_progress", content: [] } },
                {
                  type: "response.content_part.added",
                  sequence_number: 0,
                  item_id: "msg_1",
                  output_index: 0,
                  content_index: 0,
                  part: { type: "output_text", text: "", annotations: [] },
                },
              ]
            : []),
          {
            type: "response.output_text.delta",
            sequence_number: 1,
            item_id: "msg_1",
            output_index: 0,
            content_index: 0,
            delta: "Salut",
            logprobs: [],
          },
          { type: "response.completed", sequence_number: 2, response: RESPONSE },
        ],
        { named: true, done: false },
      );
    });
  }

  static async start(): Promise<FakeOpenAI> {
    return new FakeOpenAI(await LocalServer.start());
  }

  get baseURL(): string {
    return `${this.server.url}/v1`;
  }

  close(): Promise<void> {
    return this.server.close();
  }
}

export const ANTHROPIC_MODEL = "claude-haiku-4-5-20251001";
export const MESSAGE = {
  id: "msg_01XFDUDYJgAACzvnptvVoYEL",
  type: "message",
  role: "assistant",
  model: ANTHROPIC_MODEL,
  content: [{ type: "text", text: "Hello!" }],
  stop_reason: "end_turn",
  stop_sequence: null,
  usage: { input_tokens: 100, output_tokens: 50, cache_read_input_tokens: 2000, cache_creation_input_tokens: 300 },
};
export const MESSAGE_UNITS = {
  model: ANTHROPIC_MODEL,
  inputTokens: 100,
  outputTokens: 50,
  cacheReadTokens: 2000,
  cacheWriteTokens: 300,
  requests: 1,
};
export const STREAM_EVENTS: Record<string, unknown>[] = [
  {
    type: "message_start",
    message: {
      ...MESSAGE,
      content: [],
      stop_reason: null,
      usage: { input_tokens: 25, output_tokens: 1, cache_read_input_tokens: 10, cache_creation_input_tokens: 5 },
    },
  },
  { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } },
  { type: "ping" },
  { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "Hello" } },
  { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: " world" } },
  { type: "content_block_stop", index: 0 },
  { type: "message_delta", delta: { stop_reason: "end_turn", stop_sequence: null }, usage: { output_tokens: 15 } },
  { type: "message_stop" },
];
export const STREAM_UNITS = {
  model: ANTHROPIC_MODEL,
  inputTokens: 25,
  outputTokens: 15,
  cacheReadTokens: 10,
  cacheWriteTokens: 5,
  requests: 1,
};

/** The SSE events of a whole message (text and tool_use blocks). */
function messageEvents(message: Record<string, unknown>): Record<string, unknown>[] {
  const blocks = message["content"] as Record<string, unknown>[];
  return [
    { type: "message_start", message: { ...message, content: [], stop_reason: null } },
    ...blocks.flatMap((block, index): Record<string, unknown>[] =>
      block["type"] === "tool_use"
        ? [
            { type: "content_block_start", index, content_block: { ...block, input: {} } },
            { type: "content_block_delta", index, delta: { type: "input_json_delta", partial_json: JSON.stringify(block["input"]) } },
            { type: "content_block_stop", index },
          ]
        : [
            { type: "content_block_start", index, content_block: { type: "text", text: "" } },
            { type: "content_block_delta", index, delta: { type: "text_delta", text: block["text"] } },
            { type: "content_block_stop", index },
          ],
    ),
    { type: "message_delta", delta: { stop_reason: message["stop_reason"], stop_sequence: null }, usage: message["usage"] },
    { type: "message_stop" },
  ];
}

/** Answers like Anthropic (JSON, or SSE for `stream: true`); keeps the request bodies. */
export class FakeAnthropic {
  readonly bodies: Record<string, unknown>[] = [];
  /** Fields (e.g. tool_use `content` and `stop_reason`) of the next messages, in order, before MESSAGE's. */
  readonly replies: Record<string, unknown>[] = [];
  /** Usage to answer with instead of MESSAGE's (and message_start's in a stream). */
  usage: Record<string, unknown> | undefined;
  /** Usage of a stream's message_delta instead of STREAM_EVENTS'. */
  deltaUsage: Record<string, unknown> | undefined;

  private constructor(readonly server: LocalServer) {
    server.route("/v1/messages", (request, res) => {
      const body = request.body as Record<string, unknown>;
      this.bodies.push(body);
      const reply = this.replies.shift();
      if (reply !== undefined) {
        const message = { ...MESSAGE, ...reply };
        if (body["stream"] === true) sendEvents(res, messageEvents(message), { named: true, done: false });
        else sendJson(res, 200, message);
        return;
      }
      if (body["stream"] !== true) {
        sendJson(res, 200, this.usage === undefined ? MESSAGE : { ...MESSAGE, usage: this.usage });
        return;
      }
      const events = JSON.parse(JSON.stringify(STREAM_EVENTS)) as Record<string, Record<string, unknown>>[];
      if (this.usage !== undefined) (events[0] as { message: Record<string, unknown> }).message["usage"] = this.usage;
      if (this.deltaUsage !== undefined) (events[6] as Record<string, unknown>)["usage"] = this.deltaUsage;
      sendEvents(res, events, { named: true, done: false });
    });
  }

  static async start(): Promise<FakeAnthropic> {
    return new FakeAnthropic(await LocalServer.start());
  }

  get baseURL(): string {
    return this.server.url;
  }

  close(): Promise<void> {
    return this.server.close();
  }
}
