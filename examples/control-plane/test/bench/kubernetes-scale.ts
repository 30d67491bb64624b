// Scale of the Kubernetes mode: N pods and M services in a fake API server (its own process), the
// control plane in this process (its RSS is what is measured), and C Delta xDS clients in a third
// process. Prints time to sync, time to the first full push to every client, RSS per pod above the
// baseline, and how long one pod change takes to reach every client.
//
//   node --expose-gc --import tsx test/bench/kubernetes-scale.ts [--pods 10000] [--services 1000]
//        [--clients 100] [--changes 5] [--xds-debounce-ms 100] [--profile-dir DIR]
//
// Not a test: nothing is asserted. Results and method: docs/benchmarks.md.
import { type ChildProcess, fork } from "node:child_process";
import { parseArgs } from "node:util";

const role = process.argv[2];

function ipOf(base: string, i: number): string {
  return `${base}.${1 + Math.floor(i / 250)}.${(i % 250) + 1}`;
}

async function runApiServer(pods: number, services: number): Promise<void> {
  const { createFakeApiServer } = await import("../fake-apiserver/fake-apiserver.js");
  const server = await createFakeApiServer({ bookmarkIntervalMs: 1000, crds: [] });
  const namespaces = 10;
  for (let n = 0; n < namespaces; n++) {
    server.apply({
      apiVersion: "v1",
      kind: "Namespace",
      metadata: { name: `ns-${n}`, labels: { "istio.io/dataplane-mode": "ambient" } },
    });
  }
  for (let s = 0; s < services; s++) {
    server.apply({
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: `svc-${s}`, namespace: `ns-${s % namespaces}` },
      spec: {
        selector: { app: `svc-${s}` },
        clusterIP: ipOf("127.30", s),
        ports: [{ name: "http", port: 80, targetPort: 8080 }],
      },
    });
  }
  for (let p = 0; p < pods; p++) {
    const s = p % services;
    server.apply({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: `pod-${p}`, namespace: `ns-${s % namespaces}`, labels: { app: `svc-${s}` } },
      spec: {
        nodeName: `node-${p % 100}`,
        serviceAccountName: `sa-${s}`,
        containers: [{ name: "app", image: "app", ports: [{ containerPort: 8080 }] }],
      },
      status: { phase: "Running", podIP: ipOf("127.10", p) },
    });
  }
  process.send?.({ kind: "ready", kubeconfig: server.kubeconfig() });
  process.on("message", (m: { kind: string; pod?: number; ip?: string }) => {
    if (m.kind === "change" && m.pod !== undefined && m.ip !== undefined) {
      const s = m.pod % services;
      const current = server.get("v1", "Pod", `pod-${m.pod}`, `ns-${s % namespaces}`);
      if (current === undefined) return;
      server.apply({ ...current, status: { ...(current.status as object), podIP: m.ip } });
    }
    if (m.kind === "exit") void server.close().then(() => process.exit(0));
  });
}

async function runClients(address: string, count: number): Promise<void> {
  const { createXdsClient, TypeUrl } = await import("@ambient/xds");
  const watchers = new Map<string, (at: number) => void>();
  const clients = Array.from({ length: count }, (_, i) => {
    const client = createXdsClient({
      address,
      node: { id: `ztunnel~127.0.0.1~ztunnel-${i}.istio-system~istio-system.svc.cluster.local` },
    });
    client.onChange((event) => {
      const at = Date.now();
      for (const r of [...event.updated, ...event.added]) {
        const name = (r.resource as { workload?: { name?: string; addresses?: Uint8Array[] } }).workload
          ?.name;
        const ip = [
          ...((r.resource as { workload?: { addresses?: Uint8Array[] } }).workload?.addresses?.[0] ?? []),
        ].join(".");
        const key = `${i}|${name}|${ip}`;
        watchers.get(key)?.(at);
      }
    });
    return client;
  });
  const t0 = performance.now();
  for (const c of clients) {
    c.watch(TypeUrl.address);
    c.watch(TypeUrl.authorization);
  }
  await Promise.all(clients.map((c) => c.ready()));
  const firstPushMs = performance.now() - t0;
  const resources = clients[0]?.resources(TypeUrl.address).size ?? 0;
  process.send?.({ kind: "ready", firstPushMs, resources });
  process.on("message", (m: { kind: string; pod?: string; ip?: string }) => {
    if (m.kind === "expect" && m.pod !== undefined && m.ip !== undefined) {
      const arrivals: number[] = [];
      for (let i = 0; i < count; i++) {
        const key = `${i}|${m.pod}|${m.ip}`;
        watchers.set(key, (at) => {
          watchers.delete(key);
          arrivals.push(at);
          if (arrivals.length === count)
            process.send?.({ kind: "arrived", last: Math.max(...arrivals), first: Math.min(...arrivals) });
        });
      }
      process.send?.({ kind: "expecting" });
    }
    if (m.kind === "exit") {
      for (const c of clients) c.close();
      process.exit(0);
    }
  });
}

function next<T>(child: ChildProcess, kind: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const onExit = (code: number | null) => reject(new Error(`child exited with ${code} before ${kind}`));
    const onMessage = (m: { kind: string }) => {
      if (m.kind !== kind) return;
      child.off("message", onMessage);
      child.off("exit", onExit);
      resolve(m as T);
    };
    child.on("message", onMessage);
    child.once("exit", onExit);
  });
}

function rssMiB(): number {
  (globalThis as { gc?: () => void }).gc?.();
  return process.memoryUsage().rss / 2 ** 20;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      pods: { type: "string", default: "10000" },
      services: { type: "string", default: "1000" },
      clients: { type: "string", default: "100" },
      changes: { type: "string", default: "5" },
      "xds-debounce-ms": { type: "string", default: "100" },
      "profile-dir": { type: "string" },
    },
  });
  const pods = Number(values.pods);
  const services = Number(values.services);
  const clientCount = Number(values.clients);
  const xdsDebounceMs = Number(values["xds-debounce-ms"]);
  const { KubeConfig } = await import("@kubernetes/client-node");
  const { startControlPlane } = await import("../../src/control-plane.js");
  const { createKubernetesSource } = await import("../../src/sources/kubernetes-source.js");
  const self = new URL(import.meta.url).pathname;
  // --profile-dir: CPU profiles of the API server and client processes (run this one with --cpu-prof).
  const profile = values["profile-dir"];
  const childOptions = {
    execArgv: [
      "--import",
      "tsx",
      ...(profile === undefined ? [] : ["--cpu-prof", `--cpu-prof-dir=${profile}`]),
    ],
    stdio: "inherit" as const,
  };

  const api = fork(self, ["apiserver", String(pods), String(services)], childOptions);
  const { kubeconfig } = await next<{ kubeconfig: string }>(api, "ready");
  const baseline = rssMiB();
  const kc = new KubeConfig();
  kc.loadFromString(kubeconfig);
  let t = performance.now();
  const source = await createKubernetesSource({ kubeConfig: kc });
  const syncMs = performance.now() - t;
  t = performance.now();
  // When each reload finished and how many resources it encoded (the "mesh configuration loaded" line).
  const reloads: { at: number; encoded: number }[] = [];
  const quiet = () => {};
  const logger = {
    debug: quiet,
    warn: quiet,
    error: quiet,
    info(obj: object, msg?: string) {
      if (msg === "mesh configuration loaded") {
        reloads.push({ at: Date.now(), encoded: (obj as { encoded: number }).encoded });
      }
    },
  };
  const cp = await startControlPlane({
    logger,
    source,
    listen: "127.0.0.1:0",
    plaintextListen: "127.0.0.1:0",
    requireXdsToken: false,
    xdsDebounceMs,
  });
  const translateMs = performance.now() - t;
  const afterSync = rssMiB();
  const clients = fork(self, ["clients", cp.plaintextAddress as string, String(clientCount)], childOptions);
  const ready = await next<{ firstPushMs: number; resources: number }>(clients, "ready");
  const afterPush = rssMiB();
  // What the RSS after the push holds: the JS heap, and Buffers (gRPC/HTTP2 and encoded resources).
  const memoryAfterPush = process.memoryUsage();

  const latencies: number[] = [];
  const reloadLatencies: number[] = [];
  const encodedPerChange: number[] = [];
  for (let k = 0; k < Number(values.changes); k++) {
    const pod = 17 + k * 101;
    const ip = ipOf("127.10", pods + 1000 + k);
    clients.send({ kind: "expect", pod: `pod-${pod}`, ip });
    await next(clients, "expecting");
    const arrived = next<{ last: number }>(clients, "arrived");
    const t0 = Date.now();
    api.send({ kind: "change", pod, ip });
    latencies.push((await arrived).last - t0);
    const reload = reloads.find((r) => r.at >= t0);
    reloadLatencies.push(reload === undefined ? -1 : reload.at - t0);
    encodedPerChange.push(reloads.filter((r) => r.at >= t0).reduce((n, r) => n + r.encoded, 0));
    await new Promise((r) => setTimeout(r, 300));
  }
  const workloads = cp.config().workloads.length;
  console.log(
    JSON.stringify(
      {
        pods,
        services,
        clients: clientCount,
        xdsDebounceMs,
        workloadsServed: workloads,
        addressResourcesPerClient: ready.resources,
        informerSyncMs: Math.round(syncMs),
        firstTranslationMs: Math.round(translateMs),
        firstFullPushToAllClientsMs: Math.round(ready.firstPushMs),
        rssBaselineMiB: Math.round(baseline),
        rssAfterSyncMiB: Math.round(afterSync),
        rssAfterPushMiB: Math.round(afterPush),
        bytesPerPodAfterSync: Math.round(((afterSync - baseline) * 2 ** 20) / pods),
        bytesPerPodAfterPush: Math.round(((afterPush - baseline) * 2 ** 20) / pods),
        heapUsedAfterPushMiB: Math.round(memoryAfterPush.heapUsed / 2 ** 20),
        arrayBuffersAfterPushMiB: Math.round(memoryAfterPush.arrayBuffers / 2 ** 20),
        oneChangeToAllClientsMs: latencies,
        oneChangeReloadedMs: reloadLatencies,
        resourcesEncodedPerChange: encodedPerChange,
      },
      null,
      2,
    ),
  );
  clients.send({ kind: "exit" });
  api.send({ kind: "exit" });
  await cp.close();
}

if (role === "apiserver") await runApiServer(Number(process.argv[3]), Number(process.argv[4]));
else if (role === "clients") await runClients(process.argv[3] as string, Number(process.argv[4]));
else await main();
