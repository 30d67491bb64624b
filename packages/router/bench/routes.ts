/** Route sets shared by the benchmark script and the proxy-server child. */

/** `n` HTTPRoutes with 4 rules each (Exact, PathPrefix + header, PathPrefix + method, PathPrefix) over 25 hostnames. */
export function makeRoutes(n: number): unknown[] {
  const routes: unknown[] = [];
  for (let i = 0; i < n; i++) {
    routes.push({
      kind: "HTTPRoute",
      metadata: {
        name: `route-${i}`,
        namespace: "bench",
        creationTimestamp: new Date(1_700_000_000_000 + i * 1000).toISOString(),
      },
      spec: {
        parentRefs: [{ kind: "Gateway", name: "waypoint" }],
        hostnames: [`svc-${i % 25}.bench.svc.cluster.local`],
        rules: [
          {
            matches: [{ path: { type: "Exact", value: `/api/v${i}/health` } }],
            backendRefs: [{ name: `svc-${i}`, port: 80 }],
          },
          {
            matches: [{ path: { value: `/api/v${i}` }, headers: [{ name: "x-canary", value: "true" }] }],
            backendRefs: [{ name: `svc-${i}-canary`, port: 80 }],
          },
          {
            matches: [{ path: { value: `/api/v${i}` }, method: "POST" }],
            backendRefs: [{ name: `svc-${i}`, port: 80 }],
          },
          { matches: [{ path: { value: `/static/${i}` } }], backendRefs: [{ name: `svc-${i}`, port: 80 }] },
        ],
      },
    });
  }
  return routes;
}

/** The proxy benchmark's routes: 10 unrelated HTTPRoutes plus the matching one, with a header filter. */
export function proxyRoutes(): unknown[] {
  return makeRoutes(10).concat([
    {
      kind: "HTTPRoute",
      metadata: { name: "echo", namespace: "bench" },
      spec: {
        parentRefs: [{ kind: "Gateway", name: "waypoint" }],
        rules: [
          {
            matches: [{ path: { value: "/api/echo" } }],
            filters: [
              {
                type: "RequestHeaderModifier",
                requestHeaderModifier: { set: [{ name: "x-routed", value: "1" }] },
              },
            ],
            backendRefs: [{ name: "echo", port: 80 }],
          },
        ],
      },
    },
  ]);
}
