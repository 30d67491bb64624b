/**
 * What `evaluate` costs a waypoint when no policy can apply: a request shaped as `@ambient/router` builds
 * it (eight headers, a normalized path, the Gateway and Service as targets) against an empty waypoint
 * engine (allowed without checking or copying the HTTP attributes), one holding a targeted policy in
 * another namespace (the same), and the checked path (an empty engine with `logDecisions` and a no-op
 * logger, which checks and copies every field as every request did before). `--baseline=FILE` adds an
 * empty engine from another build of the package (e.g. `dist/index.js` of an earlier commit), in the
 * same rounds. Run with `pnpm bench:no-policy`.
 */
import { pathToFileURL } from "node:url";
import { type AuthorizationRequest, createAuthorizationEngine } from "../src/index.js";

type Evaluate = (request: AuthorizationRequest) => { allowed: boolean };

const HEADERS = {
  host: "api.bench.svc.cluster.local",
  "content-length": "1024",
  "user-agent": "h2load nghttp2/1.52.0",
  accept: "*/*",
  "x-request-id": "6f1c0a52-0d57-4d0e-9b8e-2f8a0f6f4c11",
  traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
  "x-forwarded-proto": "http",
  "x-envoy-attempt-count": "1",
};

/** A fresh request per call, as the router builds one per request. */
const request = (): AuthorizationRequest => ({
  source: { ip: "10.0.0.1", port: 40000, identity: "spiffe://cluster.local/ns/bench/sa/client" },
  destination: {
    ip: "10.96.0.10",
    port: 80,
    targets: [
      { kind: "Gateway", group: "gateway.networking.k8s.io", name: "waypoint", namespace: "bench" },
      { kind: "Service", group: "", name: "api", namespace: "bench" },
    ],
  },
  http: {
    host: "api.bench.svc.cluster.local",
    method: "POST",
    path: "/api/echo",
    pathNormalized: true,
    headers: { ...HEADERS },
  },
});

const engines: [string, Evaluate][] = [];
const empty = createAuthorizationEngine({ l7Attachment: "waypoint" });
engines.push(["empty waypoint engine (no check, no copy)", (r) => empty.evaluate(r)]);
const elsewhere = createAuthorizationEngine({ l7Attachment: "waypoint" });
elsewhere.applyYaml(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: only-get, namespace: other }
spec:
  targetRefs: [{ kind: Gateway, group: gateway.networking.k8s.io, name: waypoint }]
  rules: [{ to: [{ operation: { methods: ["GET"] } }] }]
`);
engines.push(["a targeted policy in another namespace", (r) => elsewhere.evaluate(r)]);
const noop = () => {};
const checked = createAuthorizationEngine({
  l7Attachment: "waypoint",
  logDecisions: true,
  logger: { debug: noop, info: noop, warn: noop, error: noop },
});
engines.push(["checked path (logDecisions, no-op logger)", (r) => checked.evaluate(r)]);
const baseline = process.argv.find((a) => a.startsWith("--baseline="))?.slice("--baseline=".length);
if (baseline !== undefined) {
  const other = (await import(pathToFileURL(baseline).href)) as typeof import("../src/index.js");
  const old = other.createAuthorizationEngine({ l7Attachment: "waypoint" });
  engines.push([`empty waypoint engine from ${baseline}`, (r) => old.evaluate(r)]);
}

function measure(evaluate: Evaluate, ms: number): number {
  let allowed = 0;
  const warm = process.hrtime.bigint() + 200_000_000n;
  while (process.hrtime.bigint() < warm) if (evaluate(request()).allowed) allowed++;
  const start = process.hrtime.bigint();
  const deadline = start + BigInt(ms) * 1_000_000n;
  let n = 0;
  while (process.hrtime.bigint() < deadline) {
    for (let i = 0; i < 1000; i++) if (evaluate(request()).allowed) allowed++;
    n += 1000;
  }
  if (allowed === 0) throw new Error("nothing was allowed");
  return Number(process.hrtime.bigint() - start) / n;
}

// Building the request alone, to subtract: the router builds it whatever the engine does.
engines.unshift(["building the request alone", () => ({ allowed: true })]);
const best = new Map<string, number>();
for (let round = 1; round <= 3; round++) {
  for (const [label, evaluate] of engines) {
    best.set(label, Math.min(best.get(label) ?? Number.POSITIVE_INFINITY, measure(evaluate, 500)));
  }
}
console.log(`best of 3 rounds of 0.5 s, ns per request (request building included):`);
for (const [label, ns] of best) console.log(`  ${label.padEnd(64)} ${ns.toFixed(0).padStart(6)} ns`);
