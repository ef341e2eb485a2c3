/** A local HTTP server for tests: routes by path, JSON and SSE answers, closed after the test. */

import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export interface Request {
  method: string;
  path: string;
  url: string;
  headers: IncomingMessage["headers"];
  raw: string;
  body: unknown;
}

export type Handler = (request: Request, response: ServerResponse) => void | Promise<void>;

/** A server on 127.0.0.1 with a free port. */
export class LocalServer {
  readonly requests: Request[] = [];
  private readonly server: Server;
  private readonly routes = new Map<string, Handler>();

  private constructor() {
    this.server = createServer((req, res) => void this.handle(req, res));
  }

  static async start(): Promise<LocalServer> {
    const local = new LocalServer();
    await new Promise<void>((resolve) => local.server.listen(0, "127.0.0.1", resolve));
    return local;
  }

  get url(): string {
    const { port } = this.server.address() as AddressInfo;
    return `http://127.0.0.1:${port}`;
  }

  route(path: string, handler: Handler): void {
    this.routes.set(path, handler);
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const raw = Buffer.concat(chunks).toString("utf8");
    let body: unknown = null;
    try {
      body = raw === "" ? null : (JSON.parse(raw) as unknown);
    } catch {
      body = raw;
    }
    const path = (req.url ?? "/").split("?")[0] ?? "/";
    const request: Request = { method: req.method ?? "GET", path, url: req.url ?? "/", headers: req.headers, raw, body };
    this.requests.push(request);
    const handler = this.routes.get(path);
    if (handler === undefined) {
      sendJson(res, 404, { error: { status: "NOT_FOUND", message: `no route ${path}` } });
      return;
    }
    try {
      await handler(request, res);
    } catch (error) {
      sendJson(res, 500, { error: { status: "INTERNAL", message: String(error) } });
    }
  }
}

/** Answer with a JSON body. */
export function sendJson(res: ServerResponse, status: number, payload: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(payload);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text), ...headers });
  res.end(text);
}

/** Answer with server-sent events (`event:` lines when `named`), then `[DONE]` when `done`. */
export function sendEvents(res: ServerResponse, events: unknown[], { named = false, done = true } = {}): void {
  res.writeHead(200, { "Content-Type": "text/event-stream" });
  for (const event of events) {
    const type = (event as { type?: string }).type;
    res.write(`${named && type ? `event: ${type}\n` : ""}data: ${JSON.stringify(event)}\n\n`);
  }
  if (done) res.write("data: [DONE]\n\n");
  res.end();
}
