// Scale of the Kubernetes mode: N pods and M services in a fake API server (its own process), the
// control plane in this process (its RSS and CPU are what is measured), and C Delta xDS clients spread
// over P client processes. Of the clients, F are full clients (createXdsClient: every resource decoded,
// as a ztunnel does) and the rest envelope clients (names, versions, nonce and ACK; see
// envelope-xds-client.ts); every client must end up with the same names and versions. Prints time to
// sync, time to the first full push to every client, the control plane's CPU for it, RSS per pod above
// the baseline, and how long one pod change takes to reach every client.
//
//   node --expose-gc --import tsx test/bench/kubernetes-scale.ts [--pods 10000] [--services 1000]
//        [--clients 100] [--client-processes 4] [--full-clients 5] [--changes 5]
//        [--xds-debounce-ms 100] [--trailing-debounce] [--realistic-pods] [--profile-dir DIR]
//        [--every-object]   (translate every object on every reload: `incrementalReload: false`)
//        [--push-buffer-mib N|off]   (the xDS servers' bound on unsent response bytes of all streams
//                                     together, `xdsMaxTotalBufferedBytes`; default the shipped 16)
//        [--client-window BYTES]   (each client's HTTP/2 receive window, `grpc-node.flow_control_window`;
//                                   default 4 MiB, createXdsClient's default; 65535 is HTTP/2's)
//        [--idle-seconds N]   (also RSS once idle: N s without work before the baseline and again at
//                              the end, so V8 and the allocator give back what a burst left them)
//        [--endpoint-slices]   (one EndpointSlice per Service as Kubernetes' controller keeps it,
//                               updated after each pod change as the controller does)
//
// Not a test: nothing is asserted. Results and method: docs/benchmarks.md.
import { type ChildProcess, fork } from "node:child_process";
import { readFile } from "node:fs/promises";
import os from "node:os";
import { parseArgs } from "node:util";
import { next } from "./child-messages.js";
import { benchPod, ipOf } from "./pod-shapes.js";

const role = process.argv[2];

/**
 * The EndpointSlice Kubernetes' controller keeps for Service `s`: its pods (`p % services === s`),
 * each named by targetRef, ready, at its IP.
 */
function controllerSlice(
  s: number,
  pods: number,
  services: number,
  ipOfPod: (p: number) => string | undefined,
) {
  const endpoints = [];
  for (let p = s; p < pods; p += services) {
    const ip = ipOfPod(p);
    if (ip === undefined) continue;
    endpoints.push({
      addresses: [ip],
      conditions: { ready: true, serving: true, terminating: false },
      nodeName: `node-${p % 100}`,
      targetRef: {
        kind: "Pod",
        namespace: `ns-${s % 10}`,
        name: `pod-${p}`,
        uid: benchPod(p, services, false).metadata?.uid,
      },
    });
  }
  return {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: {
      name: `svc-${s}-abcde`,
      namespace: `ns-${s % 10}`,
      labels: {
        "kubernetes.io/service-name": `svc-${s}`,
        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
      },
    },
    addressType: "IPv4",
    endpoints,
    ports: [{ name: "http", port: 8080, protocol: "TCP" }],
  };
}

async function runApiServer(
  pods: number,
  services: number,
  realistic: boolean,
  slices: boolean,
): Promise<void> {
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
  for (let p = 0; p < pods; p++) server.apply(benchPod(p, services, realistic) as never);
  const ipOfPod = (p: number) =>
    (server.get("v1", "Pod", `pod-${p}`, `ns-${(p % services) % namespaces}`)?.status as { podIP?: string })
      ?.podIP;
  if (slices)
    for (let s = 0; s < services; s++) server.apply(controllerSlice(s, pods, services, ipOfPod) as never);
  process.send?.({ kind: "ready", kubeconfig: server.kubeconfig() });
  process.on("message", (m: { kind: string; pod?: number; ip?: string }) => {
    if (m.kind === "change" && m.pod !== undefined && m.ip !== undefined) {
      const s = m.pod % services;
      const current = server.get("v1", "Pod", `pod-${m.pod}`, `ns-${s % namespaces}`);
      if (current === undefined) return;
      server.apply({ ...current, status: { ...(current.status as object), podIP: m.ip } });
      // The EndpointSlice controller follows, as in a cluster: one more update, of the pod's slice.
      if (slices) server.apply(controllerSlice(s, pods, services, ipOfPod) as never);
    }
    if (m.kind === "exit") void server.close().then(() => process.exit(0));
  });
}

// One of the client processes: `count` Delta clients, the first `full` of them full clients
// (createXdsClient: every resource decoded to a message, as a ztunnel does), the rest envelope
// clients (names, versions, nonce and ACK; no resource decoded). All connect on "connect".
async function runClients(
  address: string,
  count: number,
  full: number,
  firstIndex: number,
  window: number,
): Promise<void> {
  const channelOptions = window > 0 ? { "grpc-node.flow_control_window": window } : {};
  const { createXdsClient, TypeUrl } = await import("@ambient/xds");
  const { createEnvelopeClient, versionsDigest } = await import("./envelope-xds-client.js");
  type Expect = { name: string; pod: string; ip: string };
  // The change being waited for, and when each client saw it.
  let expect: Expect | undefined;
  let arrivals: number[] = [];
  let agreeVersion = new Set<string>();
  const arrived = (at: number, version: string) => {
    arrivals.push(at);
    agreeVersion.add(version);
    if (arrivals.length === count) {
      process.send?.({
        kind: "arrived",
        last: Math.max(...arrivals),
        first: Math.min(...arrivals),
        versions: [...agreeVersion],
        cpu: process.cpuUsage(),
      });
      expect = undefined;
    }
  };
  type Handle = {
    ready(): Promise<void>;
    digest(typeUrl: string): string;
    close(): void;
    size(): number;
    /** Forget that the awaited change was seen. */
    reset(): void;
  };
  const handles: Handle[] = [];
  // The envelope clients of this process hold one copy of each name and version between them.
  const strings = new Map<string, string>();
  const start = () => {
    for (let i = 0; i < count; i++) {
      const nodeId = `ztunnel~127.0.0.1~ztunnel-${firstIndex + i}.istio-system~istio-system.svc.cluster.local`;
      if (i < full) {
        const client = createXdsClient({ address, node: { id: nodeId }, channelOptions });
        let seen = false;
        client.onChange((event) => {
          const e = expect;
          if (e === undefined || seen || event.typeUrl !== TypeUrl.address) return;
          for (const r of [...event.updated, ...event.added]) {
            const workload = (r.resource as { workload?: { name?: string; addresses?: Uint8Array[] } })
              .workload;
            if (r.name !== e.name || workload?.name !== e.pod) continue;
            // A full client checks what it decoded: the new IP, not only a new version.
            if ([...(workload.addresses?.[0] ?? [])].join(".") !== e.ip) continue;
            seen = true;
            arrived(Date.now(), r.version);
          }
        });
        client.watch(TypeUrl.address);
        client.watch(TypeUrl.authorization);
        handles.push({
          ready: () => client.ready(),
          digest: (t) =>
            versionsDigest(new Map([...client.resources(t)].map(([n, r]) => [n, r.version] as const))),
          close: () => client.close(),
          size: () => client.resources(TypeUrl.address).size,
          reset: () => {
            seen = false;
          },
        });
      } else {
        let seen = false;
        const client = createEnvelopeClient({
          address,
          nodeId,
          channelOptions,
          strings,
          typeUrls: [TypeUrl.address, TypeUrl.authorization],
          onResponse(envelope) {
            const e = expect;
            if (e === undefined || seen || envelope.typeUrl !== TypeUrl.address) return;
            const r = envelope.resources.find((x) => x.name === e.name);
            if (r === undefined) return;
            seen = true;
            arrived(Date.now(), r.version);
          },
        });
        handles.push({
          ready: () => client.ready(),
          digest: (t) => versionsDigest(client.versions.get(t)),
          close: () => client.close(),
          size: () => client.versions.get(TypeUrl.address)?.size ?? 0,
          reset: () => {
            seen = false;
          },
        });
      }
    }
  };
  const digests = () => [
    ...new Set(handles.map((h) => `${h.digest(TypeUrl.address)}|${h.digest(TypeUrl.authorization)}`)),
  ];
  process.on("message", (m: { kind: string } & Partial<Expect>) => {
    if (m.kind === "connect") {
      const cpu = process.cpuUsage();
      start();
      // The digests are asked for once every process is ready ("digest"): computed here, they would
      // take CPU from the push to the other processes' clients.
      void Promise.all(handles.map((h) => h.ready())).then(() => {
        process.send?.({
          kind: "ready",
          at: Date.now(),
          resources: handles[0]?.size() ?? 0,
          cpu: process.cpuUsage(cpu),
        });
      });
    }
    if (m.kind === "expect" && m.name !== undefined && m.pod !== undefined && m.ip !== undefined) {
      arrivals = [];
      agreeVersion = new Set();
      for (const h of handles) h.reset();
      expect = { name: m.name, pod: m.pod, ip: m.ip };
      process.send?.({ kind: "expecting" });
    }
    if (m.kind === "digest") process.send?.({ kind: "digest", digests: digests() });
    if (m.kind === "exit") {
      for (const h of handles) h.close();
      process.exit(0);
    }
  });
  process.send?.({ kind: "started" });
}

/**
 * RSS after three forced GCs with an event-loop turn between them: buffers that were written to
 * sockets a moment ago (a push's framing copies) are released a few turns later, so a single GC
 * straight after a push would count a varying share of them as held.
 */
async function settledRssMiB(): Promise<number> {
  for (let i = 0; i < 3; i++) {
    await new Promise((resolve) => setImmediate(resolve));
    (globalThis as { gc?: () => void }).gc?.();
  }
  return process.memoryUsage().rss / 2 ** 20;
}

/** The most this process has had resident so far (`VmHWM`), in MiB. */
async function peakRssMiB(): Promise<number> {
  const status = await readFile("/proc/self/status", "utf8");
  return Number(/^VmHWM:\s+(\d+) kB$/m.exec(status)?.[1]) / 1024;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      pods: { type: "string", default: "10000" },
      services: { type: "string", default: "1000" },
      clients: { type: "string", default: "100" },
      changes: { type: "string", default: "5" },
      "client-processes": { type: "string", default: "4" },
      "full-clients": { type: "string", default: "5" },
      "xds-debounce-ms": { type: "string", default: "100" },
      "push-buffer-mib": { type: "string" },
      "trailing-debounce": { type: "boolean", default: false },
      "realistic-pods": { type: "boolean", default: false },
      "endpoint-slices": { type: "boolean", default: false },
      "profile-dir": { type: "string" },
      "every-object": { type: "boolean", default: false },
      "client-window": { type: "string", default: String(4 * 1024 * 1024) },
      "idle-seconds": { type: "string", default: "0" },
    },
  });
  const pods = Number(values.pods);
  const services = Number(values.services);
  const clientCount = Number(values.clients);
  const xdsDebounceMs = Number(values["xds-debounce-ms"]);
  const pushBufferFlag = values["push-buffer-mib"];
  const pushBuffer =
    pushBufferFlag === undefined
      ? undefined
      : pushBufferFlag === "off"
        ? Number.POSITIVE_INFINITY
        : Number(pushBufferFlag) * 2 ** 20;
  const processes = Math.max(1, Math.min(Number(values["client-processes"]), clientCount));
  const fullClients = Math.min(Number(values["full-clients"]), clientCount);
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

  const api = fork(
    self,
    [
      "apiserver",
      String(pods),
      String(services),
      values["realistic-pods"] ? "realistic" : "minimal",
      values["endpoint-slices"] ? "slices" : "no-slices",
    ],
    childOptions,
  );
  const { kubeconfig } = await next<{ kubeconfig: string }>(api, "ready");
  const idleMs = Number(values["idle-seconds"]) * 1000;
  const idle = () => new Promise((r) => setTimeout(r, idleMs));
  // Once idle, the heap's young generation and the allocator's arenas have shrunk back: what a pod
  // costs the process in steady state, not what the last burst left.
  let idleBaseline: number | undefined;
  if (idleMs > 0) {
    await idle();
    idleBaseline = await settledRssMiB();
  }
  const baseline = await settledRssMiB();
  const heapBaseline = process.memoryUsage();
  const kc = new KubeConfig();
  kc.loadFromString(kubeconfig);
  let t = performance.now();
  const source = await createKubernetesSource({ kubeConfig: kc });
  const syncMs = performance.now() - t;
  t = performance.now();
  // When each reload finished and how many resources it encoded (the "mesh configuration loaded" line).
  const reloads: { at: number; encoded: number; translated: string }[] = [];
  const quiet = () => {};
  const logger = {
    debug: quiet,
    warn: quiet,
    error: quiet,
    info(obj: object, msg?: string) {
      if (msg === "mesh configuration loaded") {
        const { encoded, translated } = obj as { encoded: number; translated: string };
        reloads.push({ at: Date.now(), encoded, translated });
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
    xdsDebounceLeadingEdge: !values["trailing-debounce"],
    incrementalReload: !values["every-object"],
    ...(pushBuffer === undefined ? {} : { xdsMaxTotalBufferedBytes: pushBuffer }),
  });
  const translateMs = performance.now() - t;
  const afterSync = await settledRssMiB();
  const heapAfterSync = process.memoryUsage();
  // The clients, spread over processes; the full clients spread over them too.
  const children: ChildProcess[] = [];
  for (let k = 0, first = 0; k < processes; k++) {
    const count = Math.floor(clientCount / processes) + (k < clientCount % processes ? 1 : 0);
    const full = Math.floor(fullClients / processes) + (k < fullClients % processes ? 1 : 0);
    const child = fork(
      self,
      [
        "clients",
        cp.plaintextAddress as string,
        String(count),
        String(full),
        String(first),
        String(Number(values["client-window"])),
      ],
      childOptions,
    );
    await next(child, "started");
    children.push(child);
    first += count;
  }
  type Ready = { at: number; resources: number; cpu: NodeJS.CpuUsage };
  const clientDigests = async () =>
    new Set(
      (
        await Promise.all(
          children.map((c) => {
            const d = next<{ digests: string[] }>(c, "digest");
            c.send({ kind: "digest" });
            return d;
          }),
        )
      ).flatMap((d) => d.digests),
    );
  const cpuBeforePush = process.cpuUsage();
  const pushStart = Date.now();
  const readyAll = Promise.all(children.map((c) => next<Ready>(c, "ready")));
  for (const c of children) c.send({ kind: "connect" });
  const readies = await readyAll;
  const firstPushMs = Math.max(...readies.map((r) => r.at)) - pushStart;
  const pushCpu = process.cpuUsage(cpuBeforePush);
  const afterPush = await settledRssMiB();
  const peakAfterPush = await peakRssMiB();
  // What the RSS after the push holds: the JS heap, and Buffers (gRPC/HTTP2 and encoded resources).
  const memoryAfterPush = process.memoryUsage();
  // Every client, full or envelope, must hold the same names and versions.
  const pushDigests = await clientDigests();

  const latencies: number[] = [];
  const reloadLatencies: number[] = [];
  const encodedPerChange: number[] = [];
  const translatedPerChange: string[] = [];
  const changeCpuMs: number[] = [];
  const versionsAgree: boolean[] = [];
  for (let k = 0; k < Number(values.changes); k++) {
    const pod = 17 + k * 101;
    const ip = ipOf("127.10", pods + 1000 + k);
    const name = cp.config().workloads.find((w) => w.workload.name === `pod-${pod}`)?.key;
    if (name === undefined) throw new Error(`pod-${pod} is not served`);
    for (const c of children) c.send({ kind: "expect", name, pod: `pod-${pod}`, ip });
    await Promise.all(children.map((c) => next(c, "expecting")));
    const arrived = Promise.all(
      children.map((c) => next<{ last: number; versions: string[] }>(c, "arrived")),
    );
    const cpu = process.cpuUsage();
    const t0 = Date.now();
    api.send({ kind: "change", pod, ip });
    const arrivals = await arrived;
    latencies.push(Math.max(...arrivals.map((a) => a.last)) - t0);
    const used = process.cpuUsage(cpu);
    changeCpuMs.push(Math.round((used.user + used.system) / 1000));
    versionsAgree.push(new Set(arrivals.flatMap((a) => a.versions)).size === 1);
    const reload = reloads.find((r) => r.at >= t0);
    reloadLatencies.push(reload === undefined ? -1 : reload.at - t0);
    encodedPerChange.push(reloads.filter((r) => r.at >= t0).reduce((n, r) => n + r.encoded, 0));
    translatedPerChange.push(
      reloads
        .filter((r) => r.at >= t0)
        .map((r) => r.translated)
        .join("+"),
    );
    await new Promise((r) => setTimeout(r, 300));
  }
  const finalDigests = await clientDigests();
  let afterIdle: number | undefined;
  let memoryAfterIdle: NodeJS.MemoryUsage | undefined;
  if (idleMs > 0) {
    await idle();
    afterIdle = await settledRssMiB();
    memoryAfterIdle = process.memoryUsage();
  }
  const workloads = cp.config().workloads.length;
  console.log(
    JSON.stringify(
      {
        pods,
        services,
        clients: clientCount,
        xdsDebounceMs,
        pushBufferMiB: pushBufferFlag ?? "16 (default)",
        debounce: values["trailing-debounce"] ? "trailing" : "leading edge",
        podShape: values["realistic-pods"] ? "realistic" : "minimal",
        clientProcesses: processes,
        fullClients,
        envelopeClients: clientCount - fullClients,
        workloadsServed: workloads,
        addressResourcesPerClient: readies[0]?.resources,
        clientReceiveWindowBytes: Number(values["client-window"]),
        clientsAgreeAfterPush: pushDigests.size === 1,
        clientsAgreeAtEnd: finalDigests.size === 1,
        informerSyncMs: Math.round(syncMs),
        firstTranslationMs: Math.round(translateMs),
        firstFullPushToAllClientsMs: firstPushMs,
        controlPlaneCpuMsForPush: Math.round((pushCpu.user + pushCpu.system) / 1000),
        clientProcessesCpuMsForPush: readies.map((r) => Math.round((r.cpu.user + r.cpu.system) / 1000)),
        rssBaselineMiB: Math.round(baseline),
        rssAfterSyncMiB: Math.round(afterSync),
        rssAfterPushMiB: Math.round(afterPush),
        peakRssAfterPushMiB: Math.round(peakAfterPush),
        bytesPerPodAfterSync: Math.round(((afterSync - baseline) * 2 ** 20) / pods),
        bytesPerPodAfterPush: Math.round(((afterPush - baseline) * 2 ** 20) / pods),
        ...(idleBaseline === undefined || afterIdle === undefined
          ? {}
          : {
              idleSeconds: idleMs / 1000,
              rssIdleBaselineMiB: Math.round(idleBaseline),
              rssIdleAtEndMiB: Math.round(afterIdle),
              bytesPerPodIdle: Math.round(((afterIdle - idleBaseline) * 2 ** 20) / pods),
              heldBytesPerPodIdle: Math.round(
                ((memoryAfterIdle as NodeJS.MemoryUsage).heapUsed +
                  (memoryAfterIdle as NodeJS.MemoryUsage).arrayBuffers -
                  heapBaseline.heapUsed -
                  heapBaseline.arrayBuffers) /
                  pods,
              ),
            }),
        // Retained JS heap + ArrayBuffers per pod: what the process holds, without the allocator's
        // unreturned peak that RSS also counts.
        heldBytesPerPodAfterSync: Math.round(
          (heapAfterSync.heapUsed +
            heapAfterSync.arrayBuffers -
            heapBaseline.heapUsed -
            heapBaseline.arrayBuffers) /
            pods,
        ),
        heldBytesPerPodAfterPush: Math.round(
          (memoryAfterPush.heapUsed +
            memoryAfterPush.arrayBuffers -
            heapBaseline.heapUsed -
            heapBaseline.arrayBuffers) /
            pods,
        ),
        heapUsedAfterPushMiB: Math.round(memoryAfterPush.heapUsed / 2 ** 20),
        arrayBuffersAfterPushMiB: Math.round(memoryAfterPush.arrayBuffers / 2 ** 20),
        oneChangeToAllClientsMs: latencies,
        oneChangeReloadedMs: reloadLatencies,
        resourcesEncodedPerChange: encodedPerChange,
        reloadsTranslated: translatedPerChange,
        controlPlaneCpuMsPerChange: changeCpuMs,
        clientsAgreeOnChangedVersion: versionsAgree,
        loadAverage: os.loadavg().map((l) => Math.round(l * 10) / 10),
      },
      null,
      2,
    ),
  );
  for (const c of children) c.send({ kind: "exit" });
  api.send({ kind: "exit" });
  await cp.close();
}

if (role === "apiserver") {
  await runApiServer(
    Number(process.argv[3]),
    Number(process.argv[4]),
    process.argv[5] === "realistic",
    process.argv[6] === "slices",
  );
} else if (role === "clients") {
  const [address, count, full, first, window] = process.argv.slice(3);
  await runClients(address as string, Number(count), Number(full), Number(first), Number(window));
} else await main();
