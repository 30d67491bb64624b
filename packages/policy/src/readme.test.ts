import assert from "node:assert/strict";
import { it } from "node:test";
import { createAuthorizationEngine } from "./index.js";

it("README example works as written", () => {
  const lines: string[] = [];
  const log = (...args: unknown[]): void => {
    lines.push(args.map(String).join(" "));
  };
  // --- README example start ---
  const engine = createAuthorizationEngine({ rootNamespace: "istio-system" });
  const { errors } = engine.applyYaml(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-frontend, namespace: shop }
spec:
  selector: { matchLabels: { app: cart } }
  rules:
  - from: [{ source: { principals: ["cluster.local/ns/shop/sa/frontend"] } }]
    to: [{ operation: { ports: ["8080"] } }]
`);
  const request = {
    source: { ip: "10.0.1.7", identity: "spiffe://cluster.local/ns/shop/sa/checkout" },
    destination: { ip: "10.0.2.9", port: 8080, workload: { namespace: "shop", labels: { app: "cart" } } },
  };
  const decision = engine.evaluate(request);
  log(errors.length, decision.allowed, decision.reason);
  // -> 0 false allow policies exist, but none allowed (checked: shop/allow-frontend)
  for (const p of engine.explain(request)) log(p.policy, p.rules.join("; "));
  // -> shop/allow-frontend principals: cluster.local/ns/shop/sa/checkout is not in [cluster.local/ns/shop/sa/frontend]
  // --- README example end ---
  assert.deepEqual(lines, [
    "0 false allow policies exist, but none allowed (checked: shop/allow-frontend)",
    "shop/allow-frontend principals: cluster.local/ns/shop/sa/checkout is not in [cluster.local/ns/shop/sa/frontend]",
  ]);
});
