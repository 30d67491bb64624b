// What the netns demo shows, as data (the CLI prints it, the test asserts it): unmodified clients in
// pod namespaces, captured and carried over HBONE, allowed, denied, refused, and cut by a policy change.
import { once } from "node:events";
import { type NetnsMesh, STRANGER_ONLY_POLICY } from "./netns-mesh.js";

export interface ScenarioResult {
  /** sleep-0 → echo Service VIP: HTTP answer. */
  allowed: { code: number | null; out: string };
  /** sleep-0 → `http://echo/`: the short name answered by the ztunnel's DNS proxy, then the same path. */
  byName: { code: number | null; out: string };
  /**
   * sleep-0 → `http://echo.internal.example/`: a ServiceEntry host without an address; the control
   * plane allocates one and the DNS proxy answers with it, so the connection is captured like a VIP's.
   */
  byServiceEntry: { code: number | null; out: string };
  /** stranger-0 → echo: refused by the AuthorizationPolicy. */
  denied: { code: number | null; out: string };
  /** outsider (no capture, no ztunnel) → echo pod IP in plaintext: refused by STRICT. */
  plaintext: { code: number | null; out: string };
  /** A streaming sleep-0 → echo connection, and whether it was closed after the policy change. */
  liveConnection: { linesBefore: number; closedAfterPolicyChange: boolean };
  /** Source/destination principals in node-a's and node-b's istio_tcp_connections_opened_total. */
  metrics: { source: string[]; destination: string[] };
}

function principals(text: string, reporter: string): string[] {
  const out = new Set<string>();
  for (const line of text.split("\n")) {
    if (!line.startsWith("istio_tcp_connections_opened_total{") || !line.includes(`reporter="${reporter}"`))
      continue;
    const src = /source_principal="([^"]*)"/.exec(line)?.[1];
    const dst = /destination_principal="([^"]*)"/.exec(line)?.[1];
    out.add(`${src} -> ${dst}`);
  }
  return [...out].sort();
}

export async function runScenario(
  mesh: NetnsMesh,
  log: (line: string) => void = () => {},
): Promise<ScenarioResult> {
  const get = mesh.client === "curl" ? "curl" : "node -e <http.get>";
  const allowed = await mesh.httpGet("sleep-0", `http://${mesh.ip.vip}/`);
  log(`sleep-0 $ ${get} http://${mesh.ip.vip}/  -> exit ${allowed.code}: ${allowed.out.trim()}`);
  const byName = await mesh.httpGet("sleep-0", "http://echo/");
  log(
    `sleep-0 $ ${get} http://echo/  (the pod's DNS, answered by its ztunnel)  -> exit ${byName.code}: ${byName.out.trim()}`,
  );
  const byServiceEntry = await mesh.httpGet("sleep-0", "http://echo.internal.example/");
  log(
    `sleep-0 $ ${get} http://echo.internal.example/  (a ServiceEntry host, its address allocated)  -> exit ${byServiceEntry.code}: ${byServiceEntry.out.trim()}`,
  );
  const denied = await mesh.httpGet("stranger-0", `http://${mesh.ip.vip}/`);
  log(`stranger-0 $ ${get} http://${mesh.ip.vip}/  -> exit ${denied.code}: ${denied.out.trim()}`);
  const plaintext = await mesh.httpGet("outsider", `http://${mesh.ip.echo}:8080/`);
  log(
    `outsider $ ${get} http://${mesh.ip.echo}:8080/  (plaintext, STRICT)  -> exit ${plaintext.code}: ${plaintext.out.trim()}`,
  );

  const stream = mesh.httpStream("sleep-0", `http://${mesh.ip.vip}/stream`);
  let lines = 0;
  stream.stdout?.on("data", (c: Buffer) => {
    lines += c.toString().split("\n").length - 1;
  });
  const exited = once(stream, "close");
  const deadline = Date.now() + 5000;
  while (lines < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  const linesBefore = lines;
  log(
    `sleep-0 $ ${get} http://${mesh.ip.vip}/stream  -> ${linesBefore} lines so far; now only stranger is allowed`,
  );
  await mesh.setPolicy(STRANGER_ONLY_POLICY);
  const closed = await Promise.race([
    exited.then(() => true),
    new Promise<boolean>((r) => setTimeout(() => r(false), 8000)),
  ]);
  if (!closed) stream.kill("SIGKILL");
  log(`the live connection was ${closed ? "closed by the policy change" : "NOT closed"}`);

  const a = (await mesh.ztunnels.get("node-a")?.metricsText()) ?? "";
  const b = (await mesh.ztunnels.get("node-b")?.metricsText()) ?? "";
  const metrics = { source: principals(a, "source"), destination: principals(b, "destination") };
  log(`node-a reports (source): ${metrics.source.join("; ")}`);
  log(`node-b reports (destination): ${metrics.destination.join("; ")}`);
  return {
    allowed,
    byName,
    byServiceEntry,
    denied,
    plaintext,
    liveConnection: { linesBefore, closedAfterPolicyChange: closed },
    metrics,
  };
}
