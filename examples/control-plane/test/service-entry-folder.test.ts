// ServiceEntry and WorkloadEntry read from the folder in the older API versions, and an edit that does
// not validate keeping the last good version (as for policies).
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type ControlPlane, startControlPlane } from "../src/index.js";

const entry = (port: string) => `
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: { name: vm-api, namespace: demo }
spec:
  hosts: [api.vm.example]
  addresses: [127.30.0.50]
  ports: [{ number: ${port}, name: http }]
  workloadSelector: { labels: { app: vm-api } }
---
apiVersion: networking.istio.io/v1alpha3
kind: WorkloadEntry
metadata: { name: vm-1, namespace: demo }
spec: { address: 192.0.2.10, labels: { app: vm-api }, ports: { http: 9090 } }
`;

describe("ServiceEntry and WorkloadEntry in the folder", { timeout: 30_000 }, () => {
  let dir: string;
  let cp: ControlPlane;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "control-plane-service-entry-"));
    await writeFile(join(dir, "entries.yaml"), entry("80"));
    cp = await startControlPlane({ meshDir: dir, listen: "127.0.0.1:0", watch: false });
  });
  after(async () => {
    await cp?.close();
    await rm(dir, { recursive: true, force: true });
  });

  const served = () => ({
    ports: cp.config().services.find((s) => s.key === "demo/api.vm.example")?.service.ports,
    vm: cp.config().workloads.find((w) => w.key === "Kubernetes/networking.istio.io/WorkloadEntry/demo/vm-1")
      ?.workload.services,
  });

  it("serves v1beta1 and v1alpha3 objects, and keeps the last good ServiceEntry over a bad edit", async () => {
    const good = {
      ports: [{ servicePort: 80, targetPort: 80 }],
      vm: { "demo/api.vm.example": { ports: [{ servicePort: 80, targetPort: 9090 }] } },
    };
    assert.deepEqual(served(), good);
    assert.deepEqual(cp.errors(), []);

    await writeFile(join(dir, "entries.yaml"), entry("0"));
    await cp.reload();
    assert.equal(cp.errors().length, 1);
    assert.equal(cp.errors()[0]?.object, "ServiceEntry/demo/vm-api");
    assert.deepEqual(cp.errors()[0]?.keeping, ["ServiceEntry/demo/vm-api"]);
    assert.match(cp.errors()[0]?.message ?? "", /spec\.ports\[0\]\.number must be a port number/);
    assert.deepEqual(served(), good);

    await writeFile(join(dir, "entries.yaml"), entry("8000"));
    await cp.reload();
    assert.deepEqual(cp.errors(), []);
    assert.deepEqual(served().ports, [{ servicePort: 8000, targetPort: 8000 }]);
  });

  it("keeps the last good ServiceEntry over an edit that leaves a port without a name", async () => {
    const good = served();
    assert.deepEqual(good.ports, [{ servicePort: 8000, targetPort: 8000 }]);
    await writeFile(join(dir, "entries.yaml"), entry("8001").replace(", name: http }", " }"));
    await cp.reload();
    assert.equal(cp.errors().length, 1);
    assert.deepEqual(cp.errors()[0]?.keeping, ["ServiceEntry/demo/vm-api"]);
    assert.match(cp.errors()[0]?.message ?? "", /spec\.ports\[0\]\.name is required/);
    assert.deepEqual(served(), good);
  });
});

const external = (name: string, host: string, extra = "") => `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: ${name}, namespace: demo${extra} }
spec:
  hosts: [${host}]
  ports: [{ number: 443, name: tls, protocol: TLS }]
  resolution: DNS
  location: MESH_EXTERNAL
`;

describe("ServiceEntry addresses allocated in folder mode", { timeout: 30_000 }, () => {
  let dir: string;
  let cp: ControlPlane | undefined;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "control-plane-se-addresses-"));
  });
  after(async () => {
    await cp?.close();
    await rm(dir, { recursive: true, force: true });
  });

  const vips = (control: ControlPlane) =>
    Object.fromEntries(
      control
        .config()
        .services.filter((s) => s.key.endsWith(".example.com"))
        .map((s) => [s.key, s.aliases]),
    );

  it("gives each host without addresses one from 240.240.0.0/16 and keeps it across edits", async () => {
    await writeFile(join(dir, "b.yaml"), external("b", "b.example.com"));
    cp = await startControlPlane({ meshDir: dir, listen: "127.0.0.1:0", watch: false });
    assert.deepEqual(vips(cp), { "demo/b.example.com": ["/240.240.0.1"] });
    // A file sorted before it: b keeps its address, a gets the next.
    await writeFile(join(dir, "a.yaml"), external("a", "a.example.com"));
    await cp.reload();
    assert.deepEqual(vips(cp), {
      "demo/a.example.com": ["/240.240.0.2"],
      "demo/b.example.com": ["/240.240.0.1"],
    });
    // Edited (a second port): the same address.
    await writeFile(
      join(dir, "b.yaml"),
      external("b", "b.example.com").replace("ports: [", "ports: [{ number: 80, name: http }, "),
    );
    await cp.reload();
    assert.deepEqual(vips(cp)["demo/b.example.com"], ["/240.240.0.1"]);
    // Opted out by label: no address, nothing for a pod's DNS to answer with.
    await writeFile(
      join(dir, "c.yaml"),
      external("c", "c.example.com", ', labels: { networking.istio.io/enable-autoallocate-ip: "false" }'),
    );
    await cp.reload();
    assert.deepEqual(vips(cp)["demo/c.example.com"], []);
    assert.deepEqual(cp.errors(), []);
  });

  it("allocates nothing when turned off", async () => {
    const off = await startControlPlane({
      meshDir: dir,
      listen: "127.0.0.1:0",
      watch: false,
      allocateServiceEntryAddresses: false,
    });
    try {
      assert.deepEqual(Object.values(vips(off)), [[], [], []]);
    } finally {
      await off.close();
    }
  });
});
