import assert from "node:assert/strict";
import type http from "node:http";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { createAuthorizationEngine } from "@ambient/policy";
import {
  type Backend,
  httpRoute,
  rawExchange,
  startBackend,
  startWaypoint,
  stopServer,
  type Waypoint,
} from "../test/harness.js";
import type { Endpoint } from "./upstream.js";

/** Answers with every header line it received, in order, as `[name, value]` pairs. */
function echoRaw(req: http.IncomingMessage, res: http.ServerResponse, _body: string, backend: Backend): void {
  const lines: [string, string][] = [];
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
    lines.push([(req.rawHeaders[i] as string).toLowerCase(), req.rawHeaders[i + 1] as string]);
  }
  res.writeHead(200, { "content-type": "application/json" });
  res.end(JSON.stringify({ id: backend.id, lines }));
}

/** Sends one raw HTTP/1.1 request with the given extra header lines; returns the status and body. */
async function send(port: number, lines: readonly string[]): Promise<{ status: number; body: string }> {
  const head = ["GET / HTTP/1.1", "host: svc.example.com", "connection: close", ...lines].join("\r\n");
  const out = await rawExchange(port, `${head}\r\n\r\n`);
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(out)?.[1] ?? 0);
  const body = out.slice(out.indexOf("\r\n\r\n") + 4);
  return { status, body: body.slice(body.indexOf("{"), body.lastIndexOf("}") + 1) };
}

function valuesOf(body: string, name: string): string[] {
  const parsed = JSON.parse(body) as { lines: [string, string][] };
  return parsed.lines.filter(([n]) => n === name).map(([, v]) => v);
}

describe("a header repeated on several lines of an HTTP/1.1 request", () => {
  let joined: Backend;
  let agent: Backend;
  let other: Backend;
  let wp: Waypoint;
  const policy = createAuthorizationEngine({ l7Attachment: "waypoint" });

  before(async () => {
    joined = await startBackend("joined", echoRaw);
    agent = await startBackend("agent", echoRaw);
    other = await startBackend("other", echoRaw);
    assert.deepEqual(
      policy.applyYaml(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: no-bots, namespace: default }
spec:
  targetRefs: [{ kind: Gateway, group: gateway.networking.k8s.io, name: waypoint }]
  action: DENY
  rules: [{ when: [{ key: "request.headers[user-agent]", values: ["*bot"] }] }]
`).errors,
      [],
    );
    wp = await startWaypoint(
      {
        "default/joined": [joined.endpoint],
        "default/agent": [agent.endpoint],
        "default/other": [other.endpoint],
      },
      {
        policy,
        waypoint: { name: "waypoint", namespace: "default" },
        routes: [
          httpRoute("r", [
            {
              matches: [{ headers: [{ name: "x-tag", value: "a,b" }] }],
              backendRefs: [{ name: "joined", port: 80 }],
            },
            {
              matches: [{ headers: [{ name: "user-agent", value: "one,two" }] }],
              backendRefs: [{ name: "agent", port: 80 }],
            },
            { backendRefs: [{ name: "other", port: 80 }] },
          ]),
        ],
      },
    );
  });
  after(async () => {
    await wp.close();
    for (const b of [joined, agent, other]) await stopServer(b.server);
  });

  it("forwards every line, including those of fields Node keeps only once", async () => {
    const res = await send(wp.port, [
      "x-tag: a",
      "user-agent: one",
      "x-tag: b",
      "user-agent: two",
      "referer: http://r1/",
      "referer: http://r2/",
    ]);
    assert.equal(res.status, 200, res.body);
    assert.deepEqual(valuesOf(res.body, "x-tag"), ["a", "b"]);
    assert.deepEqual(valuesOf(res.body, "user-agent"), ["one", "two"]);
    assert.deepEqual(valuesOf(res.body, "referer"), ["http://r1/", "http://r2/"]);
  });

  it("matches route headers against all the lines joined with a comma", async () => {
    const tagged = await send(wp.port, ["x-tag: a", "x-tag: b"]);
    assert.equal(JSON.parse(tagged.body).id, "joined");
    const agents = await send(wp.port, ["user-agent: one", "user-agent: two"]);
    assert.equal(JSON.parse(agents.body).id, "agent");
    const single = await send(wp.port, ["user-agent: one"]);
    assert.equal(JSON.parse(single.body).id, "other");
  });

  it("applies AuthorizationPolicy header conditions to every line", async () => {
    assert.equal((await send(wp.port, ["user-agent: browser"])).status, 200);
    const before = agent.requests.length + joined.requests.length + other.requests.length;
    assert.equal((await send(wp.port, ["user-agent: browser", "user-agent: evilbot"])).status, 403);
    assert.equal(agent.requests.length + joined.requests.length + other.requests.length, before);
  });
});

describe("a repeated header forwarded to an HTTP/2 backend", () => {
  let server: http2.Http2Server;
  let endpoint: Endpoint;
  let wp: Waypoint;

  before(async () => {
    server = http2.createServer((req, res) => {
      const lines: [string, string][] = [];
      for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
        lines.push([req.rawHeaders[i] as string, req.rawHeaders[i + 1] as string]);
      }
      req.resume();
      req.on("end", () => res.end(JSON.stringify({ lines })));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    endpoint = { address: "127.0.0.1", port: (server.address() as AddressInfo).port, protocol: "http2" };
    wp = await startWaypoint(
      { "default/h2": [endpoint] },
      { routes: [httpRoute("r", [{ backendRefs: [{ name: "h2", port: 80 }] }])] },
    );
  });
  after(async () => {
    await wp.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it("sends each repeated field as one line of comma-joined values", async () => {
    const res = await send(wp.port, ["user-agent: one", "user-agent: two", "x-tag: a", "x-tag: b"]);
    assert.equal(res.status, 200, res.body);
    assert.deepEqual(valuesOf(res.body, "user-agent"), ["one,two"]);
    assert.deepEqual(valuesOf(res.body, "x-tag"), ["a,b"]);
  });
});
